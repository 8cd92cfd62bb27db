"""Quick quality and privacy checks on one generated batch, in seconds.

1. **FID-domain** of the batch against a cached real reference, in the domain classifier's feature
   space (not ImageNet Inception). A batch of 16-64 images gives a strongly biased FID (it falls
   as n grows), so next to it we state (a) its bootstrap spread and (b) the *real floor*: what
   batches of the same size of real held-out images score against the same reference.
2. **Classifier confidence** per requested class: the domain classifier's probability that each
   image shows the class it was generated for.
3. **Nearest real neighbour** of each image among the training images (pixel RMS on the [0, 1]
   scale, as in the evaluation's privacy check), flagged as a near-copy below
   ``near_copy_ratio`` x the median training-to-training distance.

The reference (real images, their features, the near-copy threshold) is built once per model
version and cached by the app; a batch then costs one feature pass and one distance matrix.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medsynth.prepared import PreparedData


@dataclass
class Scorer:
    """The domain classifier: features for FID-domain and class probabilities for confidence."""

    features: Any  # callable: images [N,1,R,R] in [-1,1] -> features [N, D] (float64)
    proba: Any  # callable: images -> class probabilities [N, C]
    classes: list[str]
    index_of: Any  # callable: a generator's class name -> the classifier's class index, or None
    name: str = "domain classifier"


def scorer_from_extractor(ex: Any) -> Scorer:
    """A :class:`Scorer` over the project's domain feature extractor (``components/features.py``).

    Images are resized to the extractor's resolution the way :class:`~medsynth.metrics.DomainFeatures`
    does, so a 28 px model is scored in the same feature space as a 64 px one.
    """
    import torch

    from medsynth.metrics import extract

    module = ex.feature_module()
    res = int(ex.meta["resolution"])

    @torch.no_grad()
    def proba(images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        if x.shape[-1] != res:
            x01 = torch.nn.functional.interpolate((x + 1) / 2, size=(res, res), mode="bilinear",
                                                  align_corners=False, antialias=x.shape[-1] > res).clamp(0, 1)
            x = x01 * 2 - 1
        ex.model.eval()
        return torch.softmax(ex.model(x), 1).numpy()

    return Scorer(features=lambda imgs: extract(module, imgs), proba=proba, classes=ex.classes,
                  index_of=ex.class_index, name=f"FID-domain extractor {ex.backbone}")


@dataclass
class Reference:
    """Real images a batch is compared with, prepared once per model version."""

    train: np.ndarray  # [N,1,R,R] in [-1,1]: nearest-neighbour search space (privacy look)
    train_labels: np.ndarray
    held_out: np.ndarray  # [M,1,R,R]: real batches for the FID floor
    classes: list[str]
    source: str
    data_hash: str
    near_copy_threshold: float
    train_nn_median: float
    feats: np.ndarray | None = None  # [K, D] reference features (a subsample of train)
    held_out_feats: np.ndarray | None = None
    scorer: Scorer | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class BatchEval:
    """What the app shows under a generated batch."""

    n: int
    seconds: float
    fid: float | None = None
    fid_boot_std: float | None = None
    fid_boot_interval: tuple[float, float] | None = None
    real_floor_mean: float | None = None
    real_floor_std: float | None = None
    confidence: np.ndarray | None = None  # [n] P(requested class)
    predicted: list[str] | None = None  # [n] the classifier's top class
    confidence_by_class: dict[str, float] = field(default_factory=dict)
    nn_distance: np.ndarray | None = None  # [n]
    nn_index: np.ndarray | None = None  # [n] index into Reference.train
    near_copy: np.ndarray | None = None  # [n] bool
    notes: list[str] = field(default_factory=list)


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a`` and ``b`` ([N, D]).

    ``tr(sqrt(S_a S_b))`` is the sum of square roots of the eigenvalues of ``S_a S_b`` (real and
    non-negative in exact arithmetic), the same formulation torchmetrics uses; numpy is enough here
    and keeps a bootstrap of 20 resamples well under a second at D = 128.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mu = a.mean(0) - b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    eig = np.linalg.eigvals(sa @ sb)
    tr_sqrt = np.sqrt(np.clip(eig.real, 0, None)).sum()
    return float(mu @ mu + np.trace(sa) + np.trace(sb) - 2.0 * tr_sqrt)


def build_reference(prepared: PreparedData, scorer: Scorer | None, size: int = 1000, floor_pool: int = 1000,
                    near_copy_ratio: float = 0.2, nn_queries: int = 500, seed: int = 0) -> Reference:
    """Cacheable reference for one model: training images, held-out images, features, threshold."""
    from medsynth.metrics import nearest_neighbours

    rng = np.random.default_rng(seed)
    train, train_y = prepared.split("train")
    held_split = "test" if prepared.count("test") >= 2 else "val"
    held, _ = prepared.split(held_split)
    held = held[rng.permutation(len(held))[:floor_pool]]
    # near-copy threshold as in the evaluation's privacy check (fewer queries: seconds, not minutes)
    q = rng.choice(len(train), size=min(nn_queries, len(train)), replace=False)
    order = np.concatenate([q, np.setdiff1d(np.arange(len(train)), q)])
    self_nn, _ = nearest_neighbours(train[order][: len(q)], train[order], exclude_same_index=True)
    med = float(np.median(self_nn))
    ref = Reference(train=train, train_labels=train_y, held_out=held, classes=prepared.classes,
                    source=str(prepared.root), data_hash=prepared.data_hash,
                    near_copy_threshold=near_copy_ratio * med, train_nn_median=med, scorer=scorer)
    if scorer is not None:
        pick = rng.permutation(len(train))[:size]
        ref.feats = np.asarray(scorer.features(train[pick]), dtype=np.float64)
        ref.held_out_feats = np.asarray(scorer.features(held), dtype=np.float64)
    else:
        ref.notes.append("no domain classifier found: FID-domain and classifier confidence are unavailable "
                         "(run `medsynth evaluate` to train it)")
    return ref


def evaluate_batch(images: np.ndarray, labels: Sequence[int] | None, classes: Sequence[str], ref: Reference,
                   bootstrap: int = 20, floor_draws: int = 10, seed: int = 0) -> BatchEval:
    """FID-domain (+ spread and real floor), per-class confidence and nearest real neighbours."""
    from medsynth.metrics import nearest_neighbours

    t0 = time.perf_counter()
    n = len(images)
    out = BatchEval(n=n, seconds=0.0, notes=list(ref.notes))
    if images.shape[-1] != ref.train.shape[-1]:
        out.notes.append(f"the reference is {ref.train.shape[-1]} px and the images {images.shape[-1]} px: "
                         "no live evaluation")
        out.seconds = time.perf_counter() - t0
        return out
    # 3. nearest real neighbour (privacy look)
    dist, idx = nearest_neighbours(images, ref.train)
    out.nn_distance, out.nn_index = dist, idx
    out.near_copy = dist < ref.near_copy_threshold
    sc = ref.scorer
    if sc is not None and ref.feats is not None:
        rng = np.random.default_rng(seed)
        feats = np.asarray(sc.features(images), dtype=np.float64)
        # 1. FID-domain with its bootstrap spread and the real floor at the same n
        if n >= 2:
            out.fid = frechet(ref.feats, feats)
            boots = [frechet(ref.feats, feats[rng.integers(0, n, n)]) for _ in range(max(0, bootstrap))]
            if boots:
                out.fid_boot_std = float(np.std(boots))
                out.fid_boot_interval = (float(np.percentile(boots, 5)), float(np.percentile(boots, 95)))
            if ref.held_out_feats is not None and len(ref.held_out_feats) >= n:
                floors = [frechet(ref.feats, ref.held_out_feats[rng.choice(len(ref.held_out_feats), n, replace=False)])
                          for _ in range(max(1, floor_draws))]
                out.real_floor_mean, out.real_floor_std = float(np.mean(floors)), float(np.std(floors))
        else:
            out.notes.append("FID-domain needs at least 2 images")
        # 2. classifier confidence for the requested classes
        probs = np.asarray(sc.proba(images))
        out.predicted = [sc.classes[i] for i in probs.argmax(1)]
        if labels is not None and len(classes):
            wanted = [sc.index_of(classes[int(y)]) for y in labels]
            if all(w is not None for w in wanted):
                conf = probs[np.arange(n), np.asarray(wanted)]
                out.confidence = conf
                for y in sorted(set(int(v) for v in labels)):
                    mask = np.asarray(labels) == y
                    out.confidence_by_class[classes[y]] = float(conf[mask].mean())
            else:
                out.notes.append("the domain classifier was trained on other classes: no per-class confidence")
    out.seconds = time.perf_counter() - t0
    return out


def fid_sentence(ev: BatchEval) -> str:
    """The FID-domain result with its uncertainty in words."""
    if ev.fid is None:
        return "FID-domain: not available"
    s = f"FID-domain {ev.fid:.2f} on {ev.n} images"
    if ev.fid_boot_interval is not None:
        lo, hi = ev.fid_boot_interval
        s += f" (bootstrap 90% range {lo:.2f}-{hi:.2f})"
    if ev.real_floor_mean is not None:
        s += (f"; {ev.n} real held-out images score {ev.real_floor_mean:.2f} ± {ev.real_floor_std:.2f} against the "
              "same reference")
    return s + (". FID from a few dozen images is biased upwards (it shrinks as n grows): compare it with the "
                "real floor at the same n, not with the model card's FID, which uses thousands of images.")
