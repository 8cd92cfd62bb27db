"""SmallCNN classifier: shapes, learning on real data, and the ACC/AUC helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsynth.metrics import accuracy_auc, binary_auc
from medsynth.training.classifier import (
    SmallCNN,
    TrainSettings,
    embed,
    predict_proba,
    train_classifier,
)


@pytest.mark.parametrize("res", [28, 32, 64])
def test_shapes_at_every_resolution(res):
    m = SmallCNN(num_classes=3, feature_dim=24, width=8).eval()
    x = torch.zeros(5, 1, res, res)
    assert m(x).shape == (5, 3)
    assert m.features(x).shape == (5, 24)
    assert SmallCNN(**m.spec()).spec() == m.spec()


def test_learns_real_ct_classes(data_dir):
    """Three MedNIST CT classes (abdomen/chest/head) are easy: a short fit must beat chance clearly."""
    z = np.load(data_dir / "mednist_ct_small.npz")
    rng = np.random.default_rng(0)
    idx = rng.choice(len(z["train_labels"]), 240, replace=False)
    tidx = rng.choice(len(z["test_labels"]), 150, replace=False)
    # 32 px keeps the test quick; the net is resolution-agnostic
    x = z["train_images"][:, None, ::2, ::2].astype(np.float32) / 127.5 - 1
    y = z["train_labels"].reshape(-1).astype(np.int64)
    xt = z["test_images"][tidx][:, None, ::2, ::2].astype(np.float32) / 127.5 - 1
    yt = z["test_labels"][tidx].reshape(-1)
    seen = []
    model, hist = train_classifier(x[idx], y[idx], 3, TrainSettings(epochs=2, batch_size=64, width=8, feature_dim=16),
                                   on_epoch=lambda e, loss, acc: seen.append(e))
    assert seen == [0, 1] and hist.loss[-1] < hist.loss[0]
    acc, auc = accuracy_auc(predict_proba(model, xt), yt)
    assert acc > 0.6 and auc > 0.8
    assert embed(model, xt[:7]).shape == (7, 16)


def test_same_seed_same_model(data_dir):
    z = np.load(data_dir / "mednist_breastmri_small.npz")
    x = z["train_images"][:40, None].astype(np.float32) / 127.5 - 1
    y = np.arange(40) % 2
    s = TrainSettings(epochs=1, batch_size=16, width=4, feature_dim=4, seed=3)
    a, _ = train_classifier(x, y, 2, s)
    b, _ = train_classifier(x, y, 2, s)
    assert np.allclose(predict_proba(a, x), predict_proba(b, x))


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="labels must be"):
        train_classifier(np.zeros((4, 1, 28, 28), np.float32), np.array([0, 1, 2, 5]), 3)
    with pytest.raises(ValueError, match="expected images"):
        train_classifier(np.zeros((4, 28, 28), np.float32), np.zeros(4), 2)
    with pytest.raises(ValueError, match="epochs"):
        TrainSettings(epochs=0).check()


def test_auc_matches_definition():
    assert binary_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert binary_auc(np.array([1.0, 1.0]), np.array([0, 1])) == pytest.approx(0.5)  # ties
    assert np.isnan(binary_auc(np.array([0.2, 0.3]), np.array([1, 1])))
    probs = np.array([[0.9, 0.1, 0.0], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1]])
    acc, auc = accuracy_auc(probs, np.array([0, 1, 2, 1]))
    assert acc == pytest.approx(0.75) and 0.5 < auc <= 1.0
