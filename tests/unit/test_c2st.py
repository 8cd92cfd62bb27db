"""Classifier two-sample test (medsynth.c2st) on real bundled CT slices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medsynth import disturb as D
from medsynth.c2st import C2STResult, C2STSettings, c2st, c2st_floor, c2st_per_class

DATA = Path(__file__).resolve().parents[2] / "data"
FAST = C2STSettings(max_images=160, epochs=3, bootstrap=50)  # small sets: a few CPU seconds per call


@pytest.fixture(scope="module")
def ct():
    with np.load(DATA / "mednist_ct_small.npz") as z:
        to = lambda a: a[:, None].astype(np.float32) / 127.5 - 1  # noqa: E731
        return (to(z["train_images"][::10]), z["train_labels"][::10, 0].astype(int),
                to(z["val_images"]), z["val_labels"][:, 0].astype(int))


def test_real_vs_real_is_near_one_half(ct):
    x_tr, _, x_va, _ = ct
    r = c2st_floor(x_tr, x_va, seed=0, settings=FAST)
    assert isinstance(r, C2STResult) and r.n_real == r.n_synth == 160
    assert 0.35 < r.auc < 0.65, r  # 80 + 80 held out: one standard error is ~0.045
    assert r.auc_lo <= r.auc <= r.auc_hi


def test_noise_is_detected(ct):
    x_tr, _, x_va, _ = ct
    r = c2st(x_tr, D.noise(x_va, 25, seed=1), seed=0, settings=FAST)
    assert r.auc > 0.9 and r.auc_lo > 0.8, r


def test_same_seed_same_answer_and_caller_rng_untouched(ct):
    import torch

    x_tr, _, x_va, _ = ct
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    small = C2STSettings(max_images=64, epochs=1, bootstrap=10)
    a = c2st(x_tr, x_va, seed=3, settings=small)
    assert torch.rand(1) == before  # the caller's torch RNG stream is not consumed
    b = c2st(x_tr, x_va, seed=3, settings=small)
    assert (a.auc, a.auc_lo, a.auc_hi) == (b.auc, b.auc_lo, b.auc_hi)
    d = a.to_dict()
    assert set(d) >= {"auc", "auc_lo", "auc_hi", "n_real", "n_synth", "seconds"}
    assert small.to_dict()["epochs"] == 1 and "C2ST" in small.to_dict()["test"]


def test_other_resolutions_are_resized(ct):
    import torch
    import torch.nn.functional as F

    x_tr, _, x_va, _ = ct
    x28 = F.interpolate(torch.from_numpy(x_va[:100]), size=(28, 28), mode="bilinear", antialias=True).numpy()
    r = c2st(x_tr, x28, seed=0, settings=C2STSettings(max_images=100, epochs=2, bootstrap=10))
    assert 0.0 <= r.auc <= 1.0 and r.n_synth == 100


def test_per_class_skips_small_classes(ct):
    x_tr, y_tr, x_va, y_va = ct
    keep = np.r_[np.flatnonzero(y_va == 0)[:100], np.flatnonzero(y_va == 1)[:10]]  # class 1: too few
    synth, labels = x_va[keep], y_va[keep]
    out = c2st_per_class(x_tr, y_tr, synth, labels, seed=0,
                         settings=C2STSettings(max_images=64, epochs=1, bootstrap=10, min_images=16))
    assert set(out) == {0}


def test_bad_inputs(ct):
    x_tr, _, x_va, _ = ct
    with pytest.raises(ValueError, match=r"\[N, 1, R, R\]"):
        c2st(x_tr[:, 0], x_va)
    with pytest.raises(ValueError, match="at least"):
        c2st(x_tr, x_va[:3])
    with pytest.raises(ValueError, match="resolution"):
        c2st(x_tr, x_va, settings=C2STSettings(resolution=48))
