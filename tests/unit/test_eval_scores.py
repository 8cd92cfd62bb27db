"""The evaluation's stage results (eval_scores.py, eval_classes.py) write their metrics.json entries in a fixed order; absent = not measured.

Tiny typed results, no images: the order and the keys are what metrics.json (written sorted) and
MLflow see; the numbers come from tests/model/test_evaluate.py.
"""

import dataclasses

from medsynth.c2st import C2STResult, C2STSettings
from medsynth.components.eval_classes import ClassScores, Judge, PerClass, Utility
from medsynth.components.eval_scores import Detectability, Distribution, SetScores, entries


def _c2st(auc: float, seconds: float) -> C2STResult:
    return C2STResult(auc, auc - 0.05, auc + 0.05, 100, 90, seconds)


def test_distribution_entries_compared_then_floor_then_ratio_then_intervals():
    d = Distribution(SetScores(10.0, 0.1, 0.01, 50, {"precision": 0.7, "coverage": 0.6}),
                     SetScores(4.0, 0.02, 0.005, 50, {}), {"fid_domain": (8.0, 12.0)})
    e = d.entries()
    assert list(e) == ["fid_domain", "kid_domain_mean", "kid_domain_std", "kid_subset_size", "prdc_precision",
                       "prdc_coverage", "fid_domain_floor", "kid_domain_floor_mean", "kid_domain_floor_std",
                       "kid_subset_size_floor", "fid_domain_ratio_to_floor", "fid_domain_lo", "fid_domain_hi"]
    assert e["fid_domain_ratio_to_floor"] == 2.5


def test_detectability_adds_every_c2st_wall_time_and_names_classes():
    d = Detectability(_c2st(0.9, 1.0), _c2st(0.52, 2.0), {"CT/HeadCT": _c2st(0.95, 0.5)}, C2STSettings())
    e = d.entries()
    assert e["c2st_seconds"] == 3.5 and e["c2st_auc_floor"] == 0.52 and e["c2st_n_floor"] == 100
    assert list(e)[-4:-1] == ["c2st_auc_class_ct_headct", "c2st_auc_lo_class_ct_headct", "c2st_auc_hi_class_ct_headct"]
    assert d.protocol(by_class=True)["per_class"] is True
    # each coarse scale: the same keys suffixed _<px>px, its time added to the one c2st_seconds
    coarse = Detectability(_c2st(0.6, 0.25), _c2st(0.5, 0.25), {"CT/HeadCT": _c2st(0.7, 0.5)},
                           C2STSettings().coarse(16))
    e = dataclasses.replace(d, coarse={16: coarse}).entries()
    assert e["c2st_auc_16px"] == 0.6 and e["c2st_auc_16px_floor"] == 0.5 and e["c2st_auc_16px_class_ct_headct"] == 0.7
    assert e["c2st_seconds"] == 4.5 and "c2st_n_real_16px" not in e
    assert C2STSettings().coarse(16).resolution == 16 and C2STSettings().coarse(16).epochs == C2STSettings().coarse_epochs


def test_coarse_view_keys_carry_the_scale():
    from medsynth.components.eval_scores import coarse_entries

    full = Distribution(SetScores(10.0, 0.1, 0.01, 50, {"recall": 0.7}), SetScores(4.0, 0.02, 0.005, 50,
                        {"recall": 0.9}), {"fid_domain_ratio_to_floor": (2.0, 3.0)})
    e = coarse_entries(full.entries())
    assert e == {"fid_domain_16px": 10.0, "prdc_recall_16px": 0.7, "fid_domain_16px_floor": 4.0,
                 "prdc_recall_16px_floor": 0.9, "fid_domain_16px_ratio_to_floor": 2.5,
                 "fid_domain_16px_ratio_to_floor_lo": 2.0, "fid_domain_16px_ratio_to_floor_hi": 3.0}


def test_per_class_leaves_out_what_was_not_measured():
    pc = PerClass(0.74, Judge("none: the extractor does not know this dataset's classes"),
                  [ClassScores("normal", 3.0, None, None, None, 0.3, 0.31)], ["class normal: 40 compared"])
    assert list(pc.entries()) == ["cond_majority_share", "cond_judge", "fid_domain_class_normal",
                                  "diversity_ms_ssim_generated_class_normal", "diversity_ms_ssim_real_class_normal"]
    judged = Judge("domain extractor cnn", 0.9, {"normal": 0.8}, in_domain_share=0.99)
    assert list(judged.entries()) == ["cond_in_domain_share", "cond_judge", "cond_accuracy", "cond_accuracy_normal"]


def test_utility_entries_and_skipped_stages():
    u = Utility(True, {"real": (0.8, 0.9, 100), "real_dup": (0.81, 0.9, 200)})
    assert list(u.entries()) == ["utility_pseudo_labels", "utility_acc_real", "utility_auc_real", "utility_n_train_real",
                                 "utility_acc_real_dup", "utility_auc_real_dup", "utility_n_train_real_dup"]
    assert u.entries()["utility_pseudo_labels"] == 1.0
    assert entries(None, u, None) == u.entries()  # a stage that did not apply writes nothing
