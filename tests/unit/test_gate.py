"""Gate policy: each check passes/fails on the numbers, and says why; the floors hold for everyone."""

from dataclasses import replace

import pytest

from medsynth.components.gate import evaluate_gate, floor_checks, gate_policy

# an evaluation that clears every floor of the default policy (3 classes, conditional)
GOOD = {"fid_domain_16px": 10.0, "fid_domain_16px_floor": 5.0, "c2st_auc_16px": 0.55, "c2st_auc_16px_floor": 0.51,
        "prdc_coverage_16px": 0.8, "prdc_recall_16px": 0.8, "diversity_ms_ssim_generated": 0.22, "diversity_ms_ssim_real": 0.2,
        "privacy_near_copy_share": 0.0, "privacy_share_below_train_p5": 0.05,
        "cond_accuracy": 0.9, "cond_majority_share": 0.4, "cond_accuracy_a": 0.95, "cond_accuracy_b": 0.85,
        "utility_acc_real_plus_synth": 0.86, "utility_acc_real_dup": 0.85, "utility_acc_real": 0.85,
        "utility_cas_ratio": 0.9}
FLOORS = {"fid_floor_ratio", "c2st", "coverage", "recall", "cas", "diversity", "conditional_accuracy",
          "conditional_accuracy_worst_class", "privacy", "privacy_p5"}


def test_first_model_passes_on_absolute_checks():
    res = evaluate_gate(gate_policy(), GOOD, None, conditional=True)
    assert res.passed and res.floors_passed
    assert {c.name for c in res.checks} == FLOORS | {"utility"}
    assert set(res.floors) == FLOORS
    assert res.floors["c2st"] == {"value": 0.55, "limit": 0.65, "passed": True, "detail": res.floors["c2st"]["detail"]}


@pytest.mark.parametrize(("change", "floor"), [
    ({"fid_domain_16px": 16.0}, "fid_floor_ratio"),  # 16 / 5 = 3.2 > k = 2.5
    ({"c2st_auc_16px": 0.98}, "c2st"),  # a CNN spots the synthetic images
    ({"prdc_coverage_16px": 0.3}, "coverage"),  # missing modes
    ({"diversity_ms_ssim_generated": 0.05}, "diversity"),  # noise: far more diverse than real
    ({"diversity_ms_ssim_generated": 0.6}, "diversity"),  # mode collapse
    ({"privacy_share_below_train_p5": 0.45}, "privacy_p5"),  # the memorising GAN of the issue
    ({"privacy_near_copy_share": 0.2}, "privacy"),
    ({"cond_accuracy_b": 0.0}, "conditional_accuracy_worst_class"),
])
def test_each_floor_refuses_when_violated_even_for_the_first_champion(change, floor):
    res = evaluate_gate(gate_policy(), {**GOOD, **change}, None, conditional=True)
    assert not res.passed and not res.floors_passed
    assert [c.name for c in res.failed] == [floor]
    assert res.floors[floor]["passed"] is False and res.floors[floor]["limit"] is not None


def test_floors_at_their_limits_pass():
    at = {**GOOD, "fid_domain_16px": 12.5, "c2st_auc_16px": 0.65, "prdc_coverage_16px": 0.5, "diversity_ms_ssim_generated": 0.25,
          "privacy_share_below_train_p5": 0.10, "privacy_near_copy_share": 0.02}
    assert evaluate_gate(gate_policy(), at, None, True).passed


def test_worst_class_decides_for_conditional_models():
    per_class = {**GOOD, "c2st_auc_16px_class_headct": 0.99, "c2st_auc_16px_class_chestct": 0.52,
                 "fid_domain_16px_class_headct": 40.0, "fid_domain_16px_floor_class_headct": 8.0,
                 "prdc_coverage_16px_class_headct": 0.05,
                 "diversity_ms_ssim_generated_class_headct": 0.95, "diversity_ms_ssim_real_class_headct": 0.3}
    res = evaluate_gate(gate_policy(), per_class, None, conditional=True)
    assert {c.name for c in res.failed} == {"c2st", "fid_floor_ratio", "coverage", "diversity"}
    assert all("headct" in c.detail for c in res.failed)
    assert res.floors["c2st"]["value"] == 0.99 and res.floors["fid_floor_ratio"]["value"] == 5.0
    # the same numbers for an unconditional model: per-class keys do not apply
    assert evaluate_gate(gate_policy(), per_class, None, conditional=False).passed


def test_conditional_accuracy_must_beat_the_majority_class_share():
    # an extractor that does not know the classes calls everything the majority class: 0.731 = share
    blind = {**GOOD, "cond_accuracy": 0.731, "cond_majority_share": 0.731, "cond_accuracy_a": 1.0,
             "cond_accuracy_b": 0.0}
    res = evaluate_gate(gate_policy(), blind, None, True)
    assert {c.name for c in res.failed} == {"conditional_accuracy", "conditional_accuracy_worst_class"}
    assert "majority-class share 0.731" in res.floors["conditional_accuracy"]["detail"]
    # the fixed 0.5 alone would have passed it
    fixed = replace(gate_policy(), cond_accuracy_margin=None)
    assert [c.name for c in evaluate_gate(fixed, blind, None, True).failed] == ["conditional_accuracy_worst_class"]
    # above the share by the margin: passes
    ok = {**GOOD, "cond_accuracy": 0.79, "cond_majority_share": 0.731}
    assert evaluate_gate(gate_policy(), ok, None, True).passed
    no_share = {k: v for k, v in GOOD.items() if k != "cond_majority_share"}
    assert not evaluate_gate(gate_policy(), no_share, None, True).passed  # not measured: never by omission


def test_conditional_accuracy_only_for_conditional_models():
    low = {**GOOD, "cond_accuracy": 0.2}
    assert not evaluate_gate(gate_policy(), low, None, conditional=True).passed
    assert evaluate_gate(gate_policy(), low, None, conditional=False).passed


def test_missing_floor_metric_fails_and_null_turns_a_floor_off():
    no_c2st = {k: v for k, v in GOOD.items() if k != "c2st_auc_16px"}
    res = evaluate_gate(gate_policy(), no_c2st, None, True)
    assert [c.name for c in res.failed] == ["c2st"] and "not measured" in res.failed[0].detail
    assert evaluate_gate(replace(gate_policy(), max_c2st_auc=None), no_c2st, None, True).passed
    # the app's live evaluation measures only some floors: the others are left out, not failed
    assert {c.name for c in floor_checks(gate_policy(), {"privacy_near_copy_share": 0.0}, False, measured_only=True)} \
        == {"privacy"}


def test_small_reference_uses_the_upper_end_of_the_fid_ratio_interval():
    m = {**GOOD, "fid_domain_16px": 12.0, "fid_domain_16px_ratio_to_floor_hi": 3.4}  # point 2.4, pessimistic 3.4
    assert evaluate_gate(gate_policy(), m, None, True).passed  # a large reference: the point estimate
    res = evaluate_gate(gate_policy(), {**m, "small_reference": True}, None, True)
    assert [c.name for c in res.failed] == ["fid_floor_ratio"] and "bootstrap" in res.failed[0].detail


def test_fid_relative_to_champion_with_tolerance():
    pol = replace(gate_policy(), fid_tolerance=0.1)
    same = {"extractor_sha256": "e1", "data_hash": "d1"}
    assert evaluate_gate(pol, {**GOOD, **same, "fid_domain_16px": 10.9}, {"fid_domain_16px": 10.0, **same}, True).passed
    res = evaluate_gate(pol, {**GOOD, **same, "fid_domain_16px": 11.5}, {"fid_domain_16px": 10.0, **same}, True)
    assert not res.passed
    assert [c.name for c in res.failed] == ["fid_vs_champion"]
    assert "11.500 > champion 10.000" in res.failed[0].detail


@pytest.mark.parametrize(("champion", "why"), [
    ({"extractor_sha256": "e2", "data_hash": "d1"}, "another feature extractor"),
    ({"extractor_sha256": "e1", "data_hash": "d2"}, "another dataset hash"),
    ({}, "not recorded"),
])
def test_fid_is_never_compared_across_extractors_or_datasets(champion, why):
    challenger = {**GOOD, "fid_domain_16px": 11.5, "extractor_sha256": "e1", "data_hash": "d1"}
    res = evaluate_gate(gate_policy(), challenger, {"fid_domain_16px": 1.0, **champion}, True)
    assert res.passed  # the floors alone decide
    skipped = [c for c in res.checks if c.skipped]
    assert [c.name for c in skipped] == ["fid_vs_champion"] and why in skipped[0].detail
    assert "fid_vs_champion skipped" in res.summary()


def test_utility_must_match_duplicated_real_control():
    res = evaluate_gate(replace(gate_policy(), utility_tolerance=0.02), {**GOOD, "utility_acc_real_plus_synth": 0.80}, None, True)
    assert not res.passed and res.failed[0].name == "utility"
    assert res.floors_passed  # utility is a relative check, not a floor


def test_missing_metric_and_unstable_metrics_fail():
    res = evaluate_gate(gate_policy(), {"privacy_near_copy_share": 0.0}, None, False)
    assert not res.passed and res.failed[0].name == "fid_present"
    res = evaluate_gate(gate_policy(), {**GOOD, "unstable": True}, None, True)
    assert not res.passed and res.failed[0].name == "stable_metrics"
    assert evaluate_gate(replace(gate_policy(), allow_unstable=True), {**GOOD, "unstable": True}, None, True).passed


def test_recall_floor_refuses_mode_dropping_worst_class():
    res = evaluate_gate(gate_policy(), {**GOOD, "prdc_recall_16px_class_headct": 0.03}, None, conditional=True)
    assert [c.name for c in res.failed] == ["recall"] and "headct" in res.failed[0].detail
    assert evaluate_gate(gate_policy(), {**GOOD, "prdc_recall_16px": 0.5}, None, True).passed  # at the limit


def test_cas_floor_where_the_task_is_real_and_said_when_not():
    task = {**GOOD, "utility_acc_real": 0.85}
    res = evaluate_gate(gate_policy(), {**task, "utility_cas_ratio": 0.6}, None, True)
    assert [c.name for c in res.failed] == ["cas"] and "0.600 < 0.8" in res.failed[0].detail
    assert evaluate_gate(gate_policy(), {**task, "utility_cas_ratio": 0.9}, None, True).passed
    # the real classifier at ceiling (CT: 1.00): the ratio says nothing, so it is not applied, saying why
    ceiling = evaluate_gate(gate_policy(), {**GOOD, "utility_acc_real": 1.0, "utility_cas_ratio": 0.6}, None, True)
    cas = next(c for c in ceiling.checks if c.name == "cas")
    assert ceiling.passed and cas.skipped and "ceiling" in cas.detail
    # unconditional models: no CAS check at all
    assert "cas" not in {c.name for c in evaluate_gate(gate_policy(), task, None, conditional=False).checks}


def test_grade_refused_usable_near_real_with_reasons():
    from medsynth.components.gate import NEAR_REAL, REFUSED, USABLE, grade

    pol = gate_policy()
    m = {**GOOD, "utility_acc_real": 0.85, "utility_cas_ratio": 0.97, "c2st_auc": 0.99}
    floors = floor_checks(pol, m, True)
    g, why = grade(pol, m, floors, True)
    assert g == USABLE and "full resolution" in why and "0.99" in why
    g, why = grade(pol, {**m, "c2st_auc": 0.6}, floor_checks(pol, {**m, "c2st_auc": 0.6}, True), True)
    assert g == NEAR_REAL
    weak_cas = {**m, "c2st_auc": 0.6, "utility_cas_ratio": 0.85}  # passes the CAS floor, not near-real's bar
    assert grade(pol, weak_cas, floor_checks(pol, weak_cas, True), True)[0] == USABLE
    bad = {**m, "prdc_recall_16px": 0.1}
    g, why = grade(pol, bad, floor_checks(pol, bad, True), True)
    assert g == REFUSED and "drops modes" in why


def test_promote_reads_the_recorded_floors_and_refuses_another_policys_record():
    from medsynth.components.gate import floors_dict

    pol = gate_policy()
    rec = floors_dict(floor_checks(pol, GOOD, True))
    rec["c2st"]["passed"] = False  # what evaluate recorded decides, not a recomputation
    m = {**GOOD, "gate_floors": rec, "gate_policy_sha256": pol.sha256()}
    assert [c.name for c in evaluate_gate(pol, m, None, True).failed] == ["c2st"]
    # the registry stores the record as JSON text: read the same way
    import json
    assert [c.name for c in evaluate_gate(pol, {**m, "gate_floors": json.dumps(rec)}, None, True).failed] == ["c2st"]
    stricter = replace(pol, max_c2st_auc=0.6)
    res = evaluate_gate(stricter, {**m, "gate_floors": floors_dict(floor_checks(pol, GOOD, True))}, None, True)
    assert [c.name for c in res.failed] == ["gate_policy"] and "re-run medsynth evaluate" in res.failed[0].detail


def test_gate_policy_reads_params_and_overrides(tmp_path):
    import yaml

    from medsynth.config import read_params
    from medsynth.errors import ConfigError

    params = read_params()
    assert gate_policy(params).max_c2st_auc == params["promote"]["gate"]["max_c2st_auc"]
    assert gate_policy(params, {"promote.gate.max_c2st_auc": "0.7"}).max_c2st_auc == 0.7
    assert gate_policy(params).sha256() != gate_policy(params, {"promote.gate.min_recall": "0.4"}).sha256()
    broken = json_copy = yaml.safe_load(yaml.safe_dump(params))
    del json_copy["promote"]["gate"]["min_recall"]
    with pytest.raises(ConfigError, match="min_recall"):
        gate_policy(broken)


def test_every_gate_number_lives_in_params_yaml_only():
    """GatePolicy has no defaults, and no module repeats a limit next to its key name."""
    import dataclasses
    import re
    from pathlib import Path

    from medsynth.components.gate import GatePolicy

    assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(GatePolicy))
    root = Path(__file__).resolve().parents[2]
    limits = [f.name for f in dataclasses.fields(GatePolicy) if f.name.startswith(("max_", "min_", "near_real_m"))]
    pattern = re.compile(r"\b(" + "|".join(limits) + r")\b\s*[:=]\s*[0-9]")
    found = [f"{p.relative_to(root)}:{i}" for folder in ("components", "medsynth", "app", "pipelines", "training",
                                                         "monitoring", "bench")
             for p in (root / folder).rglob("*.py")
             for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not found, f"gate limits written outside params.yaml: {found}"


def test_readme_table_reads_its_numbers_from_params_yaml():
    from pathlib import Path

    from medsynth.components.gate import README_MARKERS, policy_table

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    a, b = readme.index(README_MARKERS[0]), readme.index(README_MARKERS[1]) + len(README_MARKERS[1])
    assert readme[a:b] == policy_table(gate_policy()), "README's gate table is stale: run `make readme-gate`"
    assert "**0.61**" in policy_table(replace(gate_policy(), max_c2st_auc=0.61))  # the table follows the policy


def test_better_entry_orders_by_grade_then_floors_then_fid_ratio():
    from medsynth.components.gate import better_entry

    p = gate_policy()
    good = {**GOOD, "gate_grade": "usable"}
    closer = {**good, "fid_domain_16px": 6.0}  # 1.2 x floor instead of 2.0
    refused = {**GOOD, "c2st_auc_16px": 0.98, "gate_grade": "refused"}
    worse = {**refused, "prdc_recall_16px": 0.1}  # two floors fail
    assert better_entry(p, good, refused)[0] and not better_entry(p, refused, good)[0]
    assert better_entry(p, closer, good)[0] and not better_entry(p, good, closer)[0]
    assert better_entry(p, refused, worse)[0] and not better_entry(p, worse, refused)[0]
    same, why = better_entry(p, good, dict(good))
    assert not same and "grade usable vs usable" in why  # a tie keeps what is shipped
