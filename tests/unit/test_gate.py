"""Gate policy: each check passes/fails on the numbers, and says why."""

from medsynth.components.gate import GatePolicy, evaluate_gate

GOOD = {"fid_domain": 10.0, "privacy_near_copy_share": 0.0, "cond_accuracy": 0.9,
        "utility_acc_real_plus_synth": 0.86, "utility_acc_real_dup": 0.85}


def test_first_model_passes_on_absolute_checks():
    res = evaluate_gate(GatePolicy(), GOOD, None, conditional=True)
    assert res.passed
    assert {c.name for c in res.checks} == {"privacy", "conditional_accuracy", "utility"}


def test_fid_relative_to_champion_with_tolerance():
    pol = GatePolicy(fid_tolerance=0.1)
    assert evaluate_gate(pol, {**GOOD, "fid_domain": 10.9}, {"fid_domain": 10.0}, True).passed
    res = evaluate_gate(pol, {**GOOD, "fid_domain": 11.5}, {"fid_domain": 10.0}, True)
    assert not res.passed
    assert [c.name for c in res.failed] == ["fid_vs_champion"]
    assert "11.500 > champion 10.000" in res.failed[0].detail


def test_memorising_generator_is_blocked():
    res = evaluate_gate(GatePolicy(max_near_copy_share=0.01), {**GOOD, "privacy_near_copy_share": 0.2}, None, True)
    assert not res.passed and res.failed[0].name == "privacy"


def test_conditional_accuracy_only_for_conditional_models():
    low = {**GOOD, "cond_accuracy": 0.2}
    assert not evaluate_gate(GatePolicy(), low, None, conditional=True).passed
    assert evaluate_gate(GatePolicy(), low, None, conditional=False).passed


def test_utility_must_match_duplicated_real_control():
    res = evaluate_gate(GatePolicy(utility_tolerance=0.02), {**GOOD, "utility_acc_real_plus_synth": 0.80}, None, True)
    assert not res.passed and res.failed[0].name == "utility"


def test_missing_metric_and_unstable_metrics_fail():
    res = evaluate_gate(GatePolicy(), {"privacy_near_copy_share": 0.0}, None, False)
    assert not res.passed and res.failed[0].name == "fid_present"
    res = evaluate_gate(GatePolicy(), {**GOOD, "unstable": True}, None, True)
    assert not res.passed and res.failed[0].name == "stable_metrics"
    assert evaluate_gate(GatePolicy(allow_unstable=True), {**GOOD, "unstable": True}, None, True).passed


def test_mode_collapse_checks_when_enabled():
    collapsed = {**GOOD, "prdc_coverage": 0.06, "diversity_ms_ssim_generated": 0.42, "diversity_ms_ssim_real": 0.22}
    assert evaluate_gate(GatePolicy(), collapsed, None, True).passed  # off by default
    res = evaluate_gate(GatePolicy(min_coverage=0.5, max_diversity_ratio=1.5), collapsed, None, True)
    assert {c.name for c in res.failed} == {"coverage", "diversity"}
    healthy = {**collapsed, "prdc_coverage": 0.8, "diversity_ms_ssim_generated": 0.25}
    assert evaluate_gate(GatePolicy(min_coverage=0.5, max_diversity_ratio=1.5), healthy, None, True).passed
