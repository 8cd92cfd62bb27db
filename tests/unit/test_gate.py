"""Gate policy: each check passes/fails on the numbers, and says why; the floors hold for everyone."""

import pytest

from medsynth.components.gate import GatePolicy, evaluate_gate, floor_checks

# an evaluation that clears every floor of the default policy (3 classes, conditional)
GOOD = {"fid_domain": 10.0, "fid_domain_floor": 5.0, "c2st_auc": 0.55, "c2st_auc_floor": 0.51,
        "prdc_coverage": 0.8, "diversity_ms_ssim_generated": 0.22, "diversity_ms_ssim_real": 0.2,
        "privacy_near_copy_share": 0.0, "privacy_share_below_train_p5": 0.05,
        "cond_accuracy": 0.9, "cond_majority_share": 0.4, "cond_accuracy_a": 0.95, "cond_accuracy_b": 0.85,
        "utility_acc_real_plus_synth": 0.86, "utility_acc_real_dup": 0.85}
FLOORS = {"fid_floor_ratio", "c2st", "coverage", "diversity", "conditional_accuracy",
          "conditional_accuracy_worst_class", "privacy", "privacy_p5"}


def test_first_model_passes_on_absolute_checks():
    res = evaluate_gate(GatePolicy(), GOOD, None, conditional=True)
    assert res.passed and res.floors_passed
    assert {c.name for c in res.checks} == FLOORS | {"utility"}
    assert set(res.floors) == FLOORS
    assert res.floors["c2st"] == {"value": 0.55, "limit": 0.65, "passed": True, "detail": res.floors["c2st"]["detail"]}


@pytest.mark.parametrize(("change", "floor"), [
    ({"fid_domain": 16.0}, "fid_floor_ratio"),  # 16 / 5 = 3.2 > k = 2.5
    ({"c2st_auc": 0.98}, "c2st"),  # a CNN spots the synthetic images
    ({"prdc_coverage": 0.3}, "coverage"),  # missing modes
    ({"diversity_ms_ssim_generated": 0.05}, "diversity"),  # noise: far more diverse than real
    ({"diversity_ms_ssim_generated": 0.6}, "diversity"),  # mode collapse
    ({"privacy_share_below_train_p5": 0.45}, "privacy_p5"),  # the memorising GAN of the issue
    ({"privacy_near_copy_share": 0.2}, "privacy"),
    ({"cond_accuracy_b": 0.0}, "conditional_accuracy_worst_class"),
])
def test_each_floor_refuses_when_violated_even_for_the_first_champion(change, floor):
    res = evaluate_gate(GatePolicy(), {**GOOD, **change}, None, conditional=True)
    assert not res.passed and not res.floors_passed
    assert [c.name for c in res.failed] == [floor]
    assert res.floors[floor]["passed"] is False and res.floors[floor]["limit"] is not None


def test_floors_at_their_limits_pass():
    at = {**GOOD, "fid_domain": 12.5, "c2st_auc": 0.65, "prdc_coverage": 0.5, "diversity_ms_ssim_generated": 0.25,
          "privacy_share_below_train_p5": 0.10, "privacy_near_copy_share": 0.02}
    assert evaluate_gate(GatePolicy(), at, None, True).passed


def test_worst_class_decides_for_conditional_models():
    per_class = {**GOOD, "c2st_auc_class_headct": 0.99, "c2st_auc_class_chestct": 0.52,
                 "fid_domain_class_headct": 40.0, "fid_domain_floor_class_headct": 8.0,
                 "prdc_coverage_class_headct": 0.05,
                 "diversity_ms_ssim_generated_class_headct": 0.95, "diversity_ms_ssim_real_class_headct": 0.3}
    res = evaluate_gate(GatePolicy(), per_class, None, conditional=True)
    assert {c.name for c in res.failed} == {"c2st", "fid_floor_ratio", "coverage", "diversity"}
    assert all("headct" in c.detail for c in res.failed)
    assert res.floors["c2st"]["value"] == 0.99 and res.floors["fid_floor_ratio"]["value"] == 5.0
    # the same numbers for an unconditional model: per-class keys do not apply
    assert evaluate_gate(GatePolicy(), per_class, None, conditional=False).passed


def test_conditional_accuracy_must_beat_the_majority_class_share():
    # an extractor that does not know the classes calls everything the majority class: 0.731 = share
    blind = {**GOOD, "cond_accuracy": 0.731, "cond_majority_share": 0.731, "cond_accuracy_a": 1.0,
             "cond_accuracy_b": 0.0}
    res = evaluate_gate(GatePolicy(), blind, None, True)
    assert {c.name for c in res.failed} == {"conditional_accuracy", "conditional_accuracy_worst_class"}
    assert "majority-class share 0.731" in res.floors["conditional_accuracy"]["detail"]
    # the fixed 0.5 alone would have passed it
    fixed = GatePolicy(cond_accuracy_margin=None)
    assert [c.name for c in evaluate_gate(fixed, blind, None, True).failed] == ["conditional_accuracy_worst_class"]
    # above the share by the margin: passes
    ok = {**GOOD, "cond_accuracy": 0.79, "cond_majority_share": 0.731}
    assert evaluate_gate(GatePolicy(), ok, None, True).passed
    no_share = {k: v for k, v in GOOD.items() if k != "cond_majority_share"}
    assert not evaluate_gate(GatePolicy(), no_share, None, True).passed  # not measured: never by omission


def test_conditional_accuracy_only_for_conditional_models():
    low = {**GOOD, "cond_accuracy": 0.2}
    assert not evaluate_gate(GatePolicy(), low, None, conditional=True).passed
    assert evaluate_gate(GatePolicy(), low, None, conditional=False).passed


def test_missing_floor_metric_fails_and_null_turns_a_floor_off():
    no_c2st = {k: v for k, v in GOOD.items() if k != "c2st_auc"}
    res = evaluate_gate(GatePolicy(), no_c2st, None, True)
    assert [c.name for c in res.failed] == ["c2st"] and "not measured" in res.failed[0].detail
    assert evaluate_gate(GatePolicy(max_c2st_auc=None), no_c2st, None, True).passed
    # the app's live evaluation measures only some floors: the others are left out, not failed
    assert {c.name for c in floor_checks(GatePolicy(), {"privacy_near_copy_share": 0.0}, False, measured_only=True)} \
        == {"privacy"}


def test_small_reference_uses_the_upper_end_of_the_fid_ratio_interval():
    m = {**GOOD, "fid_domain": 12.0, "fid_domain_ratio_to_floor_hi": 3.4}  # point 2.4, pessimistic 3.4
    assert evaluate_gate(GatePolicy(), m, None, True).passed  # a large reference: the point estimate
    res = evaluate_gate(GatePolicy(), {**m, "small_reference": True}, None, True)
    assert [c.name for c in res.failed] == ["fid_floor_ratio"] and "bootstrap" in res.failed[0].detail


def test_fid_relative_to_champion_with_tolerance():
    pol = GatePolicy(fid_tolerance=0.1)
    same = {"extractor_sha256": "e1", "data_hash": "d1"}
    assert evaluate_gate(pol, {**GOOD, **same, "fid_domain": 10.9}, {"fid_domain": 10.0, **same}, True).passed
    res = evaluate_gate(pol, {**GOOD, **same, "fid_domain": 11.5}, {"fid_domain": 10.0, **same}, True)
    assert not res.passed
    assert [c.name for c in res.failed] == ["fid_vs_champion"]
    assert "11.500 > champion 10.000" in res.failed[0].detail


@pytest.mark.parametrize(("champion", "why"), [
    ({"extractor_sha256": "e2", "data_hash": "d1"}, "another feature extractor"),
    ({"extractor_sha256": "e1", "data_hash": "d2"}, "another dataset hash"),
    ({}, "not recorded"),
])
def test_fid_is_never_compared_across_extractors_or_datasets(champion, why):
    challenger = {**GOOD, "fid_domain": 11.5, "extractor_sha256": "e1", "data_hash": "d1"}
    res = evaluate_gate(GatePolicy(), challenger, {"fid_domain": 1.0, **champion}, True)
    assert res.passed  # the floors alone decide
    skipped = [c for c in res.checks if c.skipped]
    assert [c.name for c in skipped] == ["fid_vs_champion"] and why in skipped[0].detail
    assert "fid_vs_champion skipped" in res.summary()


def test_utility_must_match_duplicated_real_control():
    res = evaluate_gate(GatePolicy(utility_tolerance=0.02), {**GOOD, "utility_acc_real_plus_synth": 0.80}, None, True)
    assert not res.passed and res.failed[0].name == "utility"
    assert res.floors_passed  # utility is a relative check, not a floor


def test_missing_metric_and_unstable_metrics_fail():
    res = evaluate_gate(GatePolicy(), {"privacy_near_copy_share": 0.0}, None, False)
    assert not res.passed and res.failed[0].name == "fid_present"
    res = evaluate_gate(GatePolicy(), {**GOOD, "unstable": True}, None, True)
    assert not res.passed and res.failed[0].name == "stable_metrics"
    assert evaluate_gate(GatePolicy(allow_unstable=True), {**GOOD, "unstable": True}, None, True).passed
