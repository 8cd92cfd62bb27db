"""Drift detection on real shifts of real chest X-rays (the claims in docs/BENCHMARKS.md, Monitoring).

Reference: adult chest X-rays (MedNIST CXR, NIH source), train split, through the evaluation
transforms. Thresholds: params.yaml ``monitor.drift``. Per-column p-values come from Evidently's
own stattests (``report=False``: the same tests as the DataDriftPreset report, without its plotly
widgets; tests/unit/test_drift.py checks the two agree).
"""

from __future__ import annotations

import numpy as np
import pytest

from medsynth.components.monitor import MonitorConfig
from medsynth.config import load_stage
from medsynth.monitoring.drift import detect_drift
from medsynth.monitoring.image_features import feature_frame
from medsynth.monitoring.shifts import LADDERS, Shift, apply_shift
from medsynth.transforms import ImageTransform

TF = ImageTransform(resolution=64)


def features(u8: np.ndarray):
    side = float(np.sqrt(u8.shape[1] * u8.shape[2]))
    return feature_frame(TF.batch_uint8(u8), sizes=np.full(len(u8), side))


@pytest.fixture(scope="module")
def setup(request):
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    cfg = load_stage(MonitorConfig, "monitor", root / "params.yaml").drift
    cxr = np.load(root / "data" / "mednist_cxr_small.npz")
    ped = np.load(root / "data" / "pneumoniamnist.npz")
    return {
        "cfg": cfg,
        "ref": features(cxr["train_images"]),
        "test": cxr["test_images"],
        "held": np.concatenate([cxr["val_images"], cxr["test_images"]]),
        "pediatric": ped["test_images"][:200],
    }


def test_same_source_held_out_split_is_not_flagged(setup):
    r = detect_drift(setup["ref"], features(setup["test"]), setup["cfg"], report=False)
    assert not r.drifted, r.summary_line()


def test_same_distribution_subsets_rarely_alarm(setup):
    # Random subsets of held-out real images: the false-alarm rate at these thresholds is ~0
    # (docs/BENCHMARKS.md measures it on 1,000 batches of the full set); allow 1 in 25 here.
    rng = np.random.default_rng(0)
    held = features(setup["held"])
    alarms = sum(
        detect_drift(setup["ref"], held.iloc[rng.choice(len(held), 100, replace=False)], setup["cfg"],
                     report=False).drifted
        for _ in range(25)
    )
    assert alarms <= 1


def test_pediatric_xrays_from_another_source_are_flagged(setup):
    r = detect_drift(setup["ref"], features(setup["pediatric"]), setup["cfg"], report=False)
    assert r.drifted and r.share_drifted >= 0.5, r.summary_line()
    assert {"sharpness", "size"} <= set(r.drifted_columns)


@pytest.mark.parametrize("kind", list(Shift))
def test_acquisition_changes_are_flagged_at_the_stronger_settings(setup, kind):
    ladder = LADDERS[kind]
    for value in ladder[-2:]:
        r = detect_drift(setup["ref"], features(apply_shift(setup["test"], kind, value, seed=1)), setup["cfg"],
                         report=False)
        assert r.drifted, f"{kind.value}={value}: {r.summary_line()}"


def test_detection_grows_with_shift_strength(setup):
    # A mild tone-curve change is within natural variation; a strong one is not.
    shares = [detect_drift(setup["ref"], features(apply_shift(setup["test"], Shift.GAMMA, g)), setup["cfg"],
                           report=False).share_drifted for g in (1.0, *LADDERS[Shift.GAMMA])]
    assert shares[0] <= 0.1 and shares[-1] >= 0.5
    assert all(b >= a - 0.1 for a, b in zip(shares, shares[1:], strict=False)), shares  # non-decreasing, up to noise
