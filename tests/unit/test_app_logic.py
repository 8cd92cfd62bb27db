"""The app's pure logic: bounded requests and seeds, class names people read, labels, the live FID, the verdict
and measurements in words, status labels, the model card."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from medsynth.app import generation, live_eval, quality
from medsynth.errors import InputError


@pytest.mark.parametrize(("name", "modality", "human"), [
    ("AbdomenCT", "CT", "abdomen CT"),
    ("CT/HeadCT", "", "head CT"),
    ("XR/PediatricPneumonia", "", "pediatric pneumonia X-ray"),
    ("pneumonia", "XR", "pneumonia X-ray"),
    ("BreastMRI", "MR", "breast MRI"),
    ("CXR", "XR", "chest X-ray"),
])
def test_human_class_names(name, modality, human):
    assert generation.human_class_name(name, modality) == human


def _req(**kw) -> generation.Request:
    base = {"count": 16, "seed": 0, "class_index": generation.MIX, "truncation": 1.0}
    return generation.Request(**{**base, **kw})


@pytest.mark.parametrize(("kw", "msg"), [
    ({"count": 0}, "Count 0 is out of range: choose 1..64"),
    ({"count": 65}, "Count 65 is out of range"),
    ({"seed": -1}, "Seed -1 is out of range"),
    ({"seed": 2**31}, "Seed 2147483648 is out of range"),
    ({"truncation": 0.05}, "Truncation 0.05 is out of range"),
    ({"class_index": 3}, "Class 3 is out of range"),
    ({"interpolate": True, "steps": 17}, "Interpolation steps 17 is out of range: choose 2..16"),
])
def test_requests_out_of_bounds_are_refused_with_the_valid_range(kw, msg):
    with pytest.raises(InputError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        generation.check_request(_req(**kw), 64, 2**31 - 1, 16, 0.1, num_classes=3)


def test_requests_in_bounds_pass():
    generation.check_request(_req(count=64, seed=2**31 - 1, truncation=0.1, class_index=2), 64, 2**31 - 1, 16, 0.1, 3)
    # interpolation ignores the count field; a count out of range does not block it
    generation.check_request(_req(count=0, interpolate=True, steps=16), 64, 2**31 - 1, 16, 0.1, 3)


def test_labels_one_class_every_class_or_none():
    assert generation.labels_for(5, generation.MIX, 3).tolist() == [0, 1, 2, 0, 1]
    assert generation.labels_for(3, 1, 3).tolist() == [1, 1, 1]
    assert generation.labels_for(3, generation.MIX, 0) is None


def test_frechet_matches_the_classic_sqrtm_formula():
    """The live FID (eigenvalues, fast enough to bootstrap) equals Heusel et al.'s sqrtm formula."""
    from scipy import linalg

    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 16))
    b = rng.normal(loc=0.3, scale=1.2, size=(64, 16))
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(sa @ sb).real
    d = a.mean(0) - b.mean(0)
    classic = d @ d + np.trace(sa) + np.trace(sb) - 2 * np.trace(covmean)
    assert live_eval.frechet(a, b) == pytest.approx(classic, rel=1e-6)
    assert live_eval.frechet(a, a) == pytest.approx(0.0, abs=1e-8)


def test_enlarge_keeps_pixels_crisp():
    img = np.arange(4, dtype=np.uint8).reshape(2, 2)
    big = generation.enlarge(img, 6)
    assert big.shape == (6, 6) and np.array_equal(big[::3, ::3], img)
    assert generation.side_by_side(img, img).shape == (2, 8)


@pytest.mark.parametrize(("typed", "msg"), [
    ("9007199254740993", "Seed 9007199254740993 is out of range: choose 0..2147483647."),  # past 2**53
    ("2147483648", "Seed 2147483648 is out of range"),
    ("-1", "Seed -1 is out of range"),
    ("1e3", "Seed '1e3' is not a whole number: choose 0..2147483647."),
    ("4.5", "Seed '4.5' is not a whole number"),
    ("  ", "Seed is empty: choose 0..2147483647."),
])
def test_every_bad_seed_entry_gets_the_range(typed, msg):
    with pytest.raises(InputError, match=re.escape(msg)):
        generation.parse_whole(typed, "Seed", 0, 2**31 - 1)


def test_the_seed_used_is_the_seed_typed():
    assert generation.parse_whole(" 2147483647 ", "Seed", 0, 2**31 - 1) == 2**31 - 1
    assert generation.parse_whole("+7", "Seed", 0, 10) == 7


# -- the verdict and the measurements, in words ------------------------------------------------------

GOOD = {"fid_domain": 12.5, "fid_domain_floor": 10.0, "fid_domain_ratio_to_floor": 1.25, "c2st_auc": 0.55,
        "c2st_auc_floor": 0.51, "prdc_coverage": 0.8, "prdc_coverage_floor": 0.85, "prdc_recall": 0.11,
        "prdc_recall_floor": 0.7, "privacy_near_copy_share": 0.0, "utility_acc_real_plus_synth": 0.9,
        "kid_subset_size": 50.0, "gate_floors_passed": True, "fid_domain_16px_ratio_to_floor": 1.3,
        "gate_floors": {"fid_floor_ratio": {"value": 1.25, "limit": 3, "passed": True, "detail": "ok"},
                        "coverage": {"value": 0.8, "limit": 0.5, "passed": True, "detail": "ok"}}}


def test_verdict_comes_from_the_gate_floors():
    assert quality.verdict(GOOD).word == "realistic"
    bad = {**GOOD, "gate_floors_passed": False, "gate_floors": json.dumps(
        {"fid_floor_ratio": {"value": 97.6, "limit": 3, "passed": False, "detail": "ratio 97.6 > 3"}})}
    v = quality.verdict(bad)  # a registry tag carries gate_floors as JSON text
    assert v.word == "needs work" and v.failed == ["fid_floor_ratio"] and "too far from real images" in v.sentence
    old = {k: v for k, v in GOOD.items() if not k.startswith("gate_floors")}
    assert quality.verdict(old).word == "not judged by the current floors"
    # no gate_floors recorded: the floor checks stored with the gate result name what failed
    checks = [{"name": "c2st", "passed": False, "floor": True, "detail": "0.97 > 0.75"},
              {"name": "fid_vs_champion", "passed": True, "floor": False, "detail": ""}]
    v = quality.verdict({"gate_floors_passed": False}, checks)
    assert v.failed == ["c2st"] and "easy to tell apart" in v.sentence
    # graded versions: the grade and its reason in words
    usable = {**GOOD, "gate_grade": "usable", "gate_grade_reason": "usable for pipeline testing and pre-training: "
              "passes every floor; a detector still tells it from real at full resolution (C2ST AUC 1.00 > 0.65)"}
    v = quality.verdict(usable)
    assert v.word == "usable for pipeline testing and pre-training" and v.ok is True
    assert v.sentence.startswith("Passes every floor; a detector still tells it") and v.sentence.endswith(").")
    refused = {**GOOD, "gate_floors_passed": False, "gate_grade": "refused",
               "gate_grade_reason": "refused: drops modes: many real images have nothing like them among the generated"}
    assert quality.verdict(refused).word == "refused" and quality.verdict(refused).ok is False
    assert quality.verdict({**GOOD, "gate_grade": "near-real", "gate_grade_reason": "near-real: passes"}).ok is True


def test_key_figures_sit_beside_the_real_floor():
    figs = {f.label: f for f in quality.key_figures(GOOD)}
    assert figs["Distance to real (FID-domain)"].value == "12.5"
    assert figs["Distance to real (FID-domain)"].beside == "real floor 10 · 1.2× the floor"
    assert figs["Detectability (C2ST AUC)"].beside == "0.5 = can't tell · real vs real 0.51"
    assert figs["Coverage of real variety"].beside == "real 0.85"
    assert quality.key_figures({}) == []


def test_measurements_are_grouped_explained_and_warnings_marked():
    failed = {**GOOD, "gate_floors": {"fid_floor_ratio": {"passed": False, "detail": "97.57 > 3"}},
              "gate_floors_passed": False}
    groups = quality.metric_rows(failed)
    assert list(groups) == ["quality", "diversity", "privacy", "utility", "run details"]
    rows = {r.key: r for rs in groups.values() for r in rs}
    assert rows["prdc_recall"].warning == "less than half of real's 0.7" and rows["prdc_recall"].better == "higher"
    assert "fails the gate's floor" in rows["fid_domain_16px_ratio_to_floor"].warning  # the policy's FID
    assert rows["fid_domain_ratio_to_floor"].warning == ""  # full resolution: reported, not gated
    assert rows["c2st_auc"].warning == "" and rows["c2st_auc"].better == "closer to 0.5"
    assert rows["prdc_coverage"].warning == ""  # 0.8 vs real 0.85: fine
    assert rows["kid_subset_size"] in groups["run details"]  # settings, not quality
    assert all(r.meaning for g in ("quality", "diversity", "privacy", "utility") for r in groups[g])


# -- standing in the registry, and the model card ----------------------------------------------------

def _mv(aliases=(), gate=True, **tags):
    from medsynth.app.model_store import ModelVersion

    return ModelVersion(name="m", version="3", aliases=list(aliases), metrics={}, gate_passed=gate, gate_summary="",
                        gate_checks=[], card="", classes=[], dataset="ct", data_hash="abc", created="2026-12-01",
                        review=tags.get("review.decision", "pending"), tags=dict(tags))


@pytest.mark.parametrize(("mv", "status"), [
    (_mv(["champion"], **{"review.decision": "approved", "review.by": "dr-who", "review.at": "2026-11-30T10:00:00Z"}),
     "champion · approved by dr-who on 2026-11-30"),
    (_mv(["champion", "challenger"], **{"champion.since": "2026-12-01T08:00:00Z"}),
     "champion · chosen by the quality gate on 2026-12-01 · awaiting review"),
    (_mv(["challenger"]), "awaiting review"),
    (_mv(["challenger"], gate=False), "not promoted · failed the quality gate"),
    (_mv(**{"review.decision": "rejected", "review.by": "dr-no", "review.at": "2026-11-02T00:00:00Z"}),
     "rejected by dr-no on 2026-11-02"),
])
def test_status_labels_a_reviewer_reads(mv, status):
    assert mv.status == status and mv.label == f"v3 · {status}"


def test_model_card_is_a_document_with_fixed_headings():
    from medsynth.app import card
    from medsynth.components.gate import GateResult
    from medsynth.components.promote import model_card

    stored = model_card("m", "3", {"dataset": "ct", "classes": ["HeadCT"], "run_id": "r" * 32, "eval_run_id": "e" * 32,
                                   "git_commit": "c" * 40}, GOOD, GateResult(True), {"model": "cgan"})
    parsed = card.parse_stored(stored)
    assert parsed["lineage"]["evaluation run"] == "e" * 32 and parsed["config"] == {"model": "cgan"}
    assert parsed["intended_use"].startswith("Research")
    link = card.run_link("e" * 32, "7", "http://mlflow:5000")
    assert link == f"[eeeeeeeeeeee](http://mlflow:5000/#/experiments/7/runs/{'e' * 32})"
    doc = card.document(_mv(["champion"]), parsed, "CT", "head CT", "realistic", link, card.run_link("r", None, ""))
    headings = [ln for ln in doc.splitlines() if ln.startswith("#")]
    assert headings == ["#### m · version 3", "##### Intended use", "##### Data", "##### Training", "##### Evaluation",
                        "##### Promotion gate", "##### Review"]
    assert "fid_domain" not in doc and "| metric |" not in doc and f"evaluation run: {link}" in doc
    assert card.run_link(None, None, "") == "not recorded"
