"""Drift features and the Evidently-based drift decision, on real chest X-rays (data/)."""

from __future__ import annotations

import numpy as np
import pytest

from medsynth.errors import ConfigError, InputError
from medsynth.monitoring.drift import DriftConfig, decide, detect_drift
from medsynth.monitoring.image_features import PCA, STAT_COLUMNS, feature_frame, image_statistics
from medsynth.monitoring.shifts import LADDERS, Shift, apply_shift
from medsynth.transforms import ImageTransform

TF = ImageTransform(resolution=64)


@pytest.fixture(scope="module")
def cxr(data_dir_module):
    z = np.load(data_dir_module / "mednist_cxr_small.npz")
    return {k: z[k] for k in ("train_images", "val_images", "test_images")}


@pytest.fixture(scope="module")
def data_dir_module():
    from pathlib import Path

    return Path(__file__).resolve().parents[2] / "data"


def test_statistics_have_one_finite_row_per_image(cxr):
    stats = image_statistics(TF.batch_uint8(cxr["val_images"][:50]))
    assert list(stats) == STAT_COLUMNS
    for name, col in stats.items():
        assert col.shape == (50,), name
        assert np.isfinite(col).all(), name
    assert ((stats["p05"] <= stats["p50"]) & (stats["p50"] <= stats["p95"])).all()
    assert (stats["entropy"] > 0).all() and (stats["entropy"] <= 6.0).all()  # 64 bins: <= 6 bits


def test_statistics_follow_the_acquisition_change_they_measure(cxr):
    base = image_statistics(TF.batch_uint8(cxr["val_images"][:100]))
    blurred = image_statistics(TF.batch_uint8(apply_shift(cxr["val_images"][:100], Shift.BLUR, 1.0)))
    noisy = image_statistics(TF.batch_uint8(apply_shift(cxr["val_images"][:100], Shift.NOISE, 0.04)))
    dark = image_statistics(TF.batch_uint8(apply_shift(cxr["val_images"][:100], Shift.GAMMA, 1.5)))
    assert np.median(blurred["sharpness"]) < 0.5 * np.median(base["sharpness"])
    assert np.median(noisy["noise"]) > 2 * np.median(base["noise"])
    assert np.median(dark["mean"]) < np.median(base["mean"])


def test_shifts_keep_shape_and_dtype_and_are_seeded(cxr):
    x = cxr["test_images"][:8]
    for kind, ladder in LADDERS.items():
        y = apply_shift(x, kind, ladder[-1], seed=3)
        assert y.shape == x.shape and y.dtype == np.uint8, kind
        assert not np.array_equal(y, x), kind
    a = apply_shift(x, Shift.NOISE, 0.02, seed=1)
    assert np.array_equal(a, apply_shift(x, Shift.NOISE, 0.02, seed=1))


def test_pca_is_fitted_on_the_reference_and_reproducible():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(300, 16)) * np.linspace(3, 0.1, 16)
    p1, p2 = PCA.fit(emb, 4), PCA.fit(emb.copy(), 4)
    assert p1.components.shape == (4, 16)
    np.testing.assert_allclose(p1.transform(emb), p2.transform(emb))
    z = p1.transform(emb)
    assert abs(z.mean(axis=0)).max() < 1e-9  # centred on the reference
    assert (np.diff(z.var(axis=0)) <= 1e-9).all()  # ordered by variance
    back = PCA.from_arrays(p1.to_arrays())
    np.testing.assert_allclose(back.transform(emb[:5]), z[:5])


def test_feature_frame_adds_size_and_embedding_columns(cxr):
    imgs = TF.batch_uint8(cxr["val_images"][:40])
    emb = np.random.default_rng(0).normal(size=(40, 8))
    df = feature_frame(imgs, sizes=np.full(40, 64.0), embeddings=emb, pca=PCA.fit(emb, 3))
    assert list(df.columns) == STAT_COLUMNS + ["size", "emb_0", "emb_1", "emb_2"]
    with pytest.raises(ValueError, match="PCA"):
        feature_frame(imgs, embeddings=emb)


def test_decide_applies_share_and_strong_rules():
    cfg = DriftConfig(p_threshold=0.01, drift_share=0.3, strong_p=1e-6)
    calm = decide({"a": 0.5, "b": 0.2, "c": 0.005, "d": 0.9}, cfg, 100, 100)
    assert not calm.drifted and calm.drifted_columns == ["c"] and calm.share_drifted == 0.25
    broad = decide({"a": 0.001, "b": 0.002, "c": 0.5, "d": 0.9}, cfg, 100, 100)
    assert broad.drifted and "share 0.50" in broad.reasons[0]
    narrow = decide({"a": 1e-9, "b": 0.2, "c": 0.5, "d": 0.9}, cfg, 100, 100)
    assert narrow.drifted and narrow.strong_columns == ["a"]


def test_config_rejects_inconsistent_thresholds():
    with pytest.raises(ConfigError, match="strong_p"):
        DriftConfig(p_threshold=0.01, strong_p=0.05).check()
    with pytest.raises(ConfigError, match="drift_share"):
        DriftConfig(drift_share=0.0).check()


def test_evidently_report_separates_same_source_from_shifted(cxr, tmp_path):
    cfg = DriftConfig()
    ref = feature_frame(TF.batch_uint8(cxr["train_images"]))
    same = feature_frame(TF.batch_uint8(cxr["val_images"]))
    shifted = feature_frame(TF.batch_uint8(apply_shift(cxr["val_images"], Shift.GAMMA, 1.5)))
    html = tmp_path / "report.html"
    # The full Evidently Report (DataDriftPreset) once, with its HTML; the fast path must agree.
    r_shift = detect_drift(ref, shifted, cfg, html_path=html)
    fast = detect_drift(ref, shifted, cfg, report=False)
    r_same = detect_drift(ref, same, cfg, report=False)
    assert set(r_shift.p_values) == set(STAT_COLUMNS)
    for c in r_shift.p_values:
        assert fast.p_values[c] == pytest.approx(r_shift.p_values[c], rel=1e-9, abs=1e-300), c
    assert not r_same.drifted, r_same.summary_line()
    assert r_shift.drifted and {"mean", "p50"} <= set(r_shift.drifted_columns), r_shift.summary_line()
    assert html.stat().st_size > 10_000 and b"<html" in html.read_bytes()[:2000].lower()


def test_too_small_batch_is_a_clear_error(cxr):
    ref = feature_frame(TF.batch_uint8(cxr["train_images"][:100]))
    cur = feature_frame(TF.batch_uint8(cxr["val_images"][:5]))
    with pytest.raises(InputError, match="5 usable images"):
        detect_drift(ref, cur, DriftConfig(min_batch=30))

