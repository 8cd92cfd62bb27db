"""metrics.json keys: one definition each, and the built families keep the format stored evaluations use.

The literals here are deliberate: they are the on-disk format (zoo metrics.json files, registry
tags, MLflow metrics) that a rename in medsynth/metric_keys.py would silently break.
"""

import numpy as np

from medsynth import metric_keys as K
from medsynth.metrics import Privacy


def _constants() -> dict[str, str]:
    return {n: v for n, v in vars(K).items() if n.isupper() and isinstance(v, str) and n != "CLASS_INFIX"}


def test_every_key_is_defined_once():
    values = list(_constants().values())
    assert len(values) == len(set(values)), sorted(v for v in values if values.count(v) > 1)


def test_per_class_keys_keep_their_stored_format():
    assert K.class_key("CT/HeadCT") == "ct_headct" and K.class_key(K.class_key("CT/HeadCT")) == "ct_headct"
    assert K.per_class(K.C2ST_AUC, "CT/HeadCT") == "c2st_auc_class_ct_headct"
    assert K.per_class(K.lo(K.C2ST_AUC), "normal") == "c2st_auc_lo_class_normal"
    assert K.per_class(K.FID_DOMAIN_FLOOR, "XR/PediatricNormal") == "fid_domain_floor_class_xr_pediatricnormal"
    assert K.split_class("prdc_coverage_floor_class_headct") == ("prdc_coverage_floor", "headct")
    assert K.split_class("prdc_coverage") == ("prdc_coverage", "")
    assert K.cond_accuracy_of("CT/AbdomenCT") == "cond_accuracy_ct_abdomenct"


def test_built_keys_match_the_named_ones():
    assert K.floor(K.FID_DOMAIN) == K.FID_DOMAIN_FLOOR and K.floor(K.C2ST_AUC) == K.C2ST_AUC_FLOOR
    assert K.ratio_to_floor(K.FID_DOMAIN) == K.FID_DOMAIN_RATIO_TO_FLOOR == "fid_domain_ratio_to_floor"
    assert (K.lo(K.FID_DOMAIN), K.hi(K.FID_DOMAIN)) == ("fid_domain_lo", "fid_domain_hi")
    for name in ("precision", "recall", "density", "coverage"):
        assert K.floor(K.prdc(name)) == getattr(K, f"PRDC_{name.upper()}_FLOOR")
    for measure in ("acc", "auc"):
        for training in K.UTILITY_TRAINING_SETS:
            assert K.utility(measure, training) == getattr(K, f"UTILITY_{measure.upper()}_{training.upper()}")
    assert K.utility("n_train", "real_dup") == "utility_n_train_real_dup"


def test_privacy_constants_are_keys_the_privacy_summary_writes():
    p = Privacy(synth_nn=np.array([0.1, 0.3]), synth_nn_index=np.array([0, 1]), train_nn=np.array([0.2, 0.4, 0.5]),
                threshold=0.05, near_copy_ratio=0.2)
    written = {K.privacy(name) for name in p.summary()}
    named = {v for n, v in _constants().items() if n.startswith("PRIVACY_")}
    assert named <= written, named - written
