"""Shared image-set metrics on small real images and on tensors with known answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medsynth import metrics as M
from medsynth.errors import ConfigError, InputError
from medsynth.training.classifier import SmallCNN


@pytest.fixture(scope="module")
def ct():
    z = np.load(Path(__file__).resolve().parents[2] / "data" / "mednist_ct_small.npz")
    to = lambda a: a[:, None].astype(np.float32) / 127.5 - 1  # noqa: E731
    return to(z["train_images"][::10]), to(z["val_images"][::3]), to(z["test_images"][::3])


def _module(resolution: int = 64) -> M.DomainFeatures:
    torch.manual_seed(0)
    net = SmallCNN(num_classes=3, feature_dim=16, width=4).eval()
    return M.DomainFeatures(net.trunk, 16, resolution)


def test_domain_features_is_a_torchmetrics_feature_module():
    mod = _module()
    assert mod.num_features == 16  # torchmetrics reads this instead of probing with 3x299x299
    x28 = torch.rand(4, 1, 28, 28)
    assert mod(x28).shape == (4, 16)  # upsampled to 64 px
    assert torch.allclose(mod(x28.repeat(1, 3, 1, 1)), mod(x28), atol=1e-6)  # RGB -> gray
    assert "bilinear resize to 64 px" in M.resize_policy(64)


def test_precomputed_path_equals_torchmetrics_with_feature_module(ct):
    """FID/KID from features extracted once == torchmetrics FID/KID(feature=DomainFeatures)."""
    _, val, test = ct
    mod = _module()
    direct = M.fid_kid_images(mod, test[:120], val[:100], kid_subset=50, kid_subsets=5)
    shared = M.fid_kid(M.extract(mod, test[:120]), M.extract(mod, val[:100]), kid_subset=50, kid_subsets=5)
    assert shared["fid"] == pytest.approx(direct["fid"], rel=1e-4, abs=1e-6)
    assert shared["kid_mean"] == pytest.approx(direct["kid_mean"], rel=1e-3, abs=1e-7)


def test_fid_kid_separate_same_from_shifted_distributions():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    c = rng.normal(loc=3.0, size=(400, 8))
    same, shifted = M.fid_kid(a, b, kid_subset=100, kid_subsets=10), M.fid_kid(a, c, kid_subset=100, kid_subsets=10)
    assert same["fid"] < 0.5 < 50 < shifted["fid"]
    assert abs(same["kid_mean"]) < 0.05 < shifted["kid_mean"]
    assert M.fid_kid(a[:30], c, kid_subset=1000)["kid_subset_size"] == 30  # bounded by the set sizes
    with pytest.raises(ValueError, match="same D"):
        M.fid_kid(a, c[:, :4])


def test_prdc_known_answers():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(300, 4))
    same = M.prdc(real, real.copy(), k=5)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    assert same["density"] == pytest.approx(1.0 + 1.0 / 5, abs=0.3)
    far = M.prdc(real, real + 100.0, k=5)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    # a collapsed generator (all fakes at one real point): precise, but no recall/coverage
    collapsed = M.prdc(real, np.repeat(real[:1], 50, 0) + 1e-6, k=5)
    assert collapsed["precision"] == 1.0 and collapsed["coverage"] < 0.05 and collapsed["recall"] < 0.05


def test_nearest_neighbours_finds_copies(ct):
    train, val, _ = ct
    d, idx = M.nearest_neighbours(train[[5, 17, 3]], train)
    assert np.array_equal(idx, [5, 17, 3]) and np.allclose(d, 0.0)
    d_self, idx_self = M.nearest_neighbours(train[:50], train, exclude_same_index=True)
    assert (idx_self != np.arange(50)).all() and (d_self > 0).all()
    dv, _ = M.nearest_neighbours(val[:50], train)
    # RMS on [0, 1]: held-out CT slices sit a few percent of the range away, copies at 0
    assert 0.0 < np.median(dv) < 0.2


def test_ssim_psnr_pairs(ct):
    _, val, test = ct
    s, p = M.ssim_psnr(val[:8], val[:8])
    assert np.allclose(s, 1.0, atol=1e-4) and np.allclose(p, M.PSNR_CAP_DB)
    s2, p2 = M.ssim_psnr(val[:8], test[:8])
    assert (s2 < 0.99).all() and (p2 < 60).all()


@pytest.mark.parametrize("res", [28, 32, 64])
def test_pair_similarity_flags_collapse(res):
    rng = np.random.default_rng(2)
    varied = rng.uniform(-1, 1, (40, 1, res, res)).astype(np.float32)
    collapsed = np.repeat(varied[:1], 40, 0)
    assert M.pair_similarity(collapsed, 50)["ms_ssim"] == pytest.approx(1.0, abs=1e-3)
    assert M.pair_similarity(varied, 50)["ms_ssim"] < 0.5


def test_privacy_flags_copies_not_held_out_images(ct):
    train, val, _ = ct
    copies = M.privacy(train[:60], train, near_copy_ratio=0.2, max_train_queries=300)
    assert copies.near_copy_share == 1.0 and copies.summary()["nn_median_ratio"] == 0.0
    held = M.privacy(val[:60], train, near_copy_ratio=0.2, max_train_queries=300)
    assert held.near_copy_share < 0.1
    assert 0.5 < held.summary()["nn_median_ratio"] < 2.0
    assert held.closest(5).shape == (5,)
    assert held.synth_nn[held.closest(1)[0]] == held.synth_nn.min()


def test_standard_fid_needs_a_usable_weights_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        M.InceptionFeatures(str(tmp_path / "missing.pth"))
    f = tmp_path / "pt_inception.pth"
    f.write_bytes(b"not weights")
    # torch-fidelity is not installable here: a clear configuration error, not a traceback
    with pytest.raises((ConfigError, InputError), match="pt_inception.pth"):
        M.InceptionFeatures(str(f))
