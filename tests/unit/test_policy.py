"""The retraining-trigger policy and the append-only history it reads."""

from __future__ import annotations

import json

import pytest

from medsynth.errors import ConfigError
from medsynth.monitoring.feedback import FeedbackSummary
from medsynth.monitoring.history import History, history_table, plot_history
from medsynth.monitoring.policy import PolicyConfig, batch_states, decide

CFG = PolicyConfig(consecutive_drift=2, feedback_min_ratings=10, feedback_max_unrealistic=0.4,
                   new_data_min_images=1000, auto_approve=True)  # the rules; eligibility is tested below


def check(h: str, drifted: bool, n: int = 100, ref: str = "R", domain: str = "in") -> dict:
    return {"kind": "check", "batch_hash": h, "batch": f"/b/{h}.npz", "drifted": drifted,
            "n_valid": n, "reference_hash": ref, "time": "t", "domain": domain}


def test_one_drifted_batch_is_not_enough_two_consecutive_are():
    d1 = decide([check("a", False), check("b", True)], set(), None, CFG)
    assert not d1.trigger and d1.action == "none"
    assert any("1 consecutive drifted batch(es) of 2" in n for n in d1.notes)
    d2 = decide([check("a", False), check("b", True), check("c", True)], set(), None, CFG)
    assert d2.trigger and d2.action == "retrain"
    assert d2.reasons[0].startswith("drift confirmed")
    assert d2.batches == ["a", "b", "c"]  # every unused batch goes into the retraining
    assert d2.batch_paths == ["/b/a.npz", "/b/b.npz", "/b/c.npz"]


def test_a_clean_batch_breaks_the_run():
    d = decide([check("a", True), check("b", False), check("c", True)], set(), None, CFG)
    assert not d.trigger


def test_rechecking_the_same_batch_counts_once():
    # The same content checked twice is one batch: it cannot confirm its own drift.
    d = decide([check("a", True), check("a", True)], set(), None, CFG)
    assert not d.trigger
    assert len(batch_states([check("a", True), check("a", False)], set())) == 1
    assert not batch_states([check("a", True), check("a", False)], set())[0].drifted  # latest wins


def test_consumed_batches_never_trigger_again():
    checks = [check("a", True), check("b", True)]
    assert decide(checks, set(), None, CFG).trigger
    again = decide(checks + [check("a", True)], {"a", "b"}, None, CFG)
    assert not again.trigger and again.batches == []


def test_checks_against_an_old_reference_do_not_count():
    checks = [check("a", True, ref="old"), check("b", True, ref="new")]
    assert not decide(checks, set(), None, CFG, reference_hash="new").trigger
    assert decide(checks, set(), None, CFG).trigger


def test_feedback_needs_enough_ratings_and_a_high_unrealistic_share():
    few = FeedbackSummary("m", "1", n_total=5, n_unrealistic=5)
    assert not decide([], set(), few, CFG).trigger
    fine = FeedbackSummary("m", "1", n_total=50, n_unrealistic=10)
    d = decide([], set(), fine, CFG)
    assert not d.trigger and any("10/50 ratings unrealistic (20%" in n for n in d.notes)
    bad = FeedbackSummary("m", "1", n_total=50, n_unrealistic=30)
    d = decide([], set(), bad, CFG, model="m@champion")
    assert d.trigger and d.reasons[0].startswith("feedback: 30/50") and d.model == "m@champion"


def test_enough_new_validated_data_triggers_even_without_drift():
    d = decide([check("a", False, 600), check("b", False, 500)], set(), None, CFG)
    assert d.trigger and d.new_images == 1100 and d.reasons[0].startswith("new data: 1100")


def test_rules_can_be_switched_off_and_bad_settings_are_rejected():
    off = PolicyConfig(consecutive_drift=None, feedback_max_unrealistic=None, new_data_min_images=None,
                       auto_approve=True)
    d = decide([check("a", True, 10**6), check("b", True)], set(), FeedbackSummary("m", None, 99, 99), off)
    assert not d.trigger and d.notes == ["drift rule off", "feedback rule off", "new-data rule off"]
    with pytest.raises(ConfigError, match="consecutive_drift"):
        PolicyConfig(consecutive_drift=0).check()
    with pytest.raises(ConfigError, match="feedback_max_unrealistic"):
        PolicyConfig(feedback_max_unrealistic=1.5).check()


def test_history_is_append_only_and_survives_a_torn_line(tmp_path):
    h = History(tmp_path / "history.jsonl")
    h.append("check", **check("a", True))
    h.append("trigger", batches=["a"], reasons=["x"])
    with open(h.path, "a") as f:
        f.write('{"kind": "check", "batch_ha')  # a crash mid-write
    h.append("check", **check("b", False))
    kinds = [e["kind"] for e in h.events()]
    assert kinds == ["check", "trigger", "check"]
    assert h.consumed_batches() == {"a"}
    assert h.last_trigger_time() is not None
    first_line = h.path.read_text().splitlines()[0]
    assert json.loads(first_line)["batch_hash"] == "a"  # earlier lines untouched
    with pytest.raises(ValueError, match="unknown history event kind"):
        h.append("bogus")


def test_history_table_and_plot(tmp_path):
    h = History(tmp_path / "history.jsonl")
    h.append("check", **check("aaaa", False), share_drifted=0.1, drifted_columns=[], drift_share_threshold=0.3)
    h.append("check", **check("bbbb", True), share_drifted=0.7, drifted_columns=["mean", "p50"])
    h.append("decision", trigger=False, reasons=[], notes=["1 consecutive drifted batch(es) of 2 needed"])
    table = history_table(h.events())
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["time", "kind", "batch", "images"]
    assert "bbbb" in table and "mean, p50" in table and "0.70" in table
    png = plot_history(h.events(), tmp_path / "history.png")
    assert png is not None and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_history([], tmp_path / "none.png") is None


def test_off_domain_batches_are_never_eligible_nor_counted():
    """Off-domain drift (hand X-rays at a chest model) neither triggers nor enters a retraining."""
    checks = [check("hand1", True, 800, domain="off"), check("hand2", True, 800, domain="off")]
    d = decide(checks, set(), None, CFG, approved={"hand1", "hand2"})
    assert not d.trigger and d.batches == [] and d.excluded == ["hand1", "hand2"]
    assert any("2 off-domain batch(es) excluded" in n for n in d.notes)
    mixed = decide(checks + [check("a", True, 600), check("b", True, 600)], set(), None, CFG)
    assert mixed.trigger and mixed.batches == ["a", "b"] and "hand1" not in mixed.batch_paths[0]


def test_eligible_batches_wait_for_approval_unless_the_policy_approves():
    manual = PolicyConfig(consecutive_drift=2, new_data_min_images=1000, auto_approve=False)
    checks = [check("a", True, 600), check("b", True, 600, domain="unverified")]
    waiting = decide(checks, set(), None, manual)
    assert not waiting.trigger and waiting.action == "await_approval" and waiting.pending == ["a", "b"]
    assert waiting.summary_line().startswith("AWAITING APPROVAL: drift confirmed")
    one = decide(checks, set(), None, manual, approved={"a"})
    assert one.trigger and one.batches == ["a"] and one.pending == ["b"]
    auto = decide(checks, set(), None, CFG)  # the policy approves in-domain batches, never unverified ones
    assert auto.trigger and auto.batches == ["a"]
    assert decide(checks, set(), None, manual, approved={"a", "b"}).new_images == 1200
