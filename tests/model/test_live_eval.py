"""The app's live evaluation on real bundled CT images: the evaluation's functions and the gate's floors.

Held-out real batches (one class, or mixed) must pass the floors a batch can measure; noise and
copies of training images must fail them, in plain words.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from prepared_fixture import write_prepared

from medsynth.app import live_eval
from medsynth.prepared import PreparedData
from medsynth.training.extractor import load_extractor

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ct(tmp_path_factory) -> PreparedData:
    return PreparedData.load(write_prepared(tmp_path_factory.mktemp("ct") / "p", "ct", resolution=32, per_class=200,
                                            eval_per_class=60))


@pytest.fixture(scope="module")
def ref(tmp_path_factory, ct):
    from medsynth.components import features
    from medsynth.components.ingest import IngestConfig
    from medsynth.config import load_stage, read_params

    datasets = load_stage(IngestConfig, "ingest", read_params(REPO / "params.yaml")).datasets
    cfg = features.FeaturesConfig(resolution=32, per_class_train=100, epochs=3, batch_size=32, width=8, feature_dim=32)
    out = tmp_path_factory.mktemp("fx") / "domain_cnn"
    features.train_extractor(cfg, datasets, REPO / "data", out)
    scorer = live_eval.scorer_from_extractor(load_extractor(out))
    return live_eval.build_reference(ct, scorer, size=400, floor_pool=180, nn_queries=200)


def _val(ct: PreparedData, cls: int | None, n: int, ref=None) -> tuple[np.ndarray, np.ndarray]:
    """``n`` real val images (of class ``cls``); with ``ref``, none that is a near-copy of a training image
    (MedNIST CT holds near-identical neighbouring slices across splits: those rightly fail the privacy floor)."""
    from medsynth.metrics import nearest_neighbours

    x, y = ct.split("val")
    idx = np.flatnonzero(y == cls) if cls is not None else np.random.default_rng(0).permutation(len(y))
    if ref is not None:
        d, _ = nearest_neighbours(x[idx], ref.train)
        idx = idx[d >= ref.near_copy_threshold]
    return x[idx[:n]], y[idx[:n]]


def test_held_out_real_one_class_batch_is_compared_with_its_class_and_passes(ref, ct):
    x, y = _val(ct, 2, 16, ref)  # 16 head CTs
    ev = live_eval.evaluate_batch(x, y, ct.classes, ref, bootstrap=5, seed=0)
    assert ev.compared_with == "class HeadCT only"
    assert {"fid_floor_ratio", "privacy", "conditional_accuracy"} <= set(ev.floors)
    assert "c2st" not in ev.floors and "privacy_p5" not in ev.floors  # need hundreds of images
    assert "cond_majority_share" not in ev.metrics  # means nothing for a one-class batch
    assert ev.passed, live_eval.verdict_sentence(ev)
    assert live_eval.verdict_sentence(ev).startswith("This batch passes")
    assert ev.fid_boot_interval[0] <= ev.fid_boot_interval[1] and ev.share_below_train_p5 is not None


def test_mixed_batch_floor_has_the_batch_class_mix(ref, ct):
    x, y = _val(ct, None, 24, ref)
    ev = live_eval.evaluate_batch(x, y, ct.classes, ref, bootstrap=0, seed=1)
    assert ev.compared_with == "all classes" and ev.real_floor_mean is not None
    assert "cond_majority_share" in ev.metrics
    assert ev.passed, live_eval.verdict_sentence(ev)


def test_noise_and_copies_fail_in_plain_words(ref, ct):
    rng = np.random.default_rng(0)
    noise = rng.uniform(-1, 1, (16, 1, 32, 32)).astype(np.float32)
    ev = live_eval.evaluate_batch(noise, np.full(16, 2), ct.classes, ref, bootstrap=0)
    assert ev.passed is False and not ev.floors["fid_floor_ratio"]["passed"]
    assert live_eval.verdict_sentence(ev).startswith("This batch FAILS the gate's floors")
    train, ty = ct.split("train")
    copies = live_eval.evaluate_batch(train[:16], ty[:16], ct.classes, ref, bootstrap=0)
    assert copies.passed is False and not copies.floors["privacy"]["passed"] and copies.near_copy.all()
    assert "near-copies" in live_eval.verdict_sentence(copies)


def test_live_fid_is_the_evaluation_fid():
    from medsynth import metrics

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 16)), rng.normal(loc=0.3, size=(64, 16))
    assert live_eval.frechet(a, b) == metrics.frechet(a, b)
    assert metrics.fid_kid(a, b, kid_subset=50, kid_subsets=2)["fid"] == pytest.approx(metrics.frechet(a, b), rel=1e-9)
