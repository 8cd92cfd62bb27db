"""Quick quality and privacy checks on one generated batch, in seconds, with the evaluation's own code.

The same functions as ``medsynth evaluate`` (medsynth/metrics.py) and the same floors as the
promotion gate (components/gate.py, ``promote.gate`` in params.yaml); only the sample is smaller.

1. **FID-domain** of the batch against cached real training features (torchmetrics' Fréchet
   distance in the domain classifier's feature space, not ImageNet Inception). A batch of 16-64
   images gives a strongly biased FID (it falls as n grows), so it is judged against the *real floor*:
   batches of real held-out images of the same size **and the same classes** scored against the
   same reference. A batch of one class is compared with that class only (reference and floor).
   The bootstrap spread says how much the number would move with other images.
2. **Judge**: the domain classifier's probability of the requested class, and its accuracy among the
   dataset's classes (the gate's conditional-accuracy floor; per class for a per-class batch).
3. **Privacy** with :func:`medsynth.metrics.privacy_against`: each image's nearest training image
   (pixel RMS on [0, 1]) against the training set's own nearest-neighbour distances (computed once
   per model): near-copy share (a floor: one near-copy in a batch is a visible failure) and share below
   the training set's 5th percentile (shown only: ~0.05 for a good generator, too noisy on 16 images).
4. **Verdict**: the gate's floors that a batch can measure (FID-domain <= k x real floor, near-copies,
   conditional accuracy), applied with ``measured_only`` -- C2ST, coverage, diversity and the privacy
   share need hundreds of images and are left to ``medsynth evaluate`` -- said in one plain sentence.

The reference (real images, their features and labels, the training set's own NN distances) is
built once per model version and cached by the app; a batch then costs one feature pass, one
distance matrix and a few small Fréchet distances.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medsynth import metric_keys as K
from medsynth.prepared import PreparedData


def frechet(real_feats: np.ndarray, fake_feats: np.ndarray) -> float:
    """The evaluation's FID (:func:`medsynth.metrics.frechet`, torchmetrics), imported when first used."""
    from medsynth.metrics import frechet as fid

    return fid(real_feats, fake_feats)


@dataclass
class Scorer:
    """The domain classifier: features for FID-domain and class probabilities for the judge."""

    features: Any  # callable: images [N,1,R,R] in [-1,1] -> features [N, D] (float64)
    proba: Any  # callable: images -> class probabilities [N, C]
    classes: list[str]
    index_of: Any  # callable: a generator's class name -> the classifier's class index, or None
    name: str = "domain classifier"


def scorer_from_extractor(ex: Any) -> Scorer:
    """A :class:`Scorer` over the project's domain feature extractor (``components/features.py``).

    Features go through :func:`medsynth.metrics.extract` and probabilities through the evaluation's
    resize (``imaging.to_res``), so a 28 px model is scored in the same space as a 64 px one.
    """
    from medsynth.imaging import to_res
    from medsynth.metrics import extract
    from medsynth.training.classifier import predict_proba

    module = ex.feature_module()
    res = int(ex.meta["resolution"])

    def proba(images: np.ndarray) -> np.ndarray:
        return predict_proba(ex.model, to_res(np.ascontiguousarray(images, dtype=np.float32), res))

    return Scorer(features=lambda imgs: extract(module, imgs), proba=proba, classes=ex.classes,
                  index_of=ex.class_index, name=f"FID-domain extractor {ex.backbone}")


@dataclass
class Reference:
    """Real images a batch is compared with, prepared once per model version."""

    train: np.ndarray  # [N,1,R,R] in [-1,1]: nearest-neighbour search space (privacy)
    train_labels: np.ndarray
    held_out: np.ndarray  # [M,1,R,R]: real batches for the FID floor
    classes: list[str]
    source: str
    data_hash: str
    near_copy_ratio: float
    train_nn: np.ndarray  # the training set's own NN distances (metrics.train_self_nn)
    held_out_labels: np.ndarray | None = None
    feats: np.ndarray | None = None  # [K, D] reference features (a subsample of train)
    feats_labels: np.ndarray | None = None  # [K]
    held_out_feats: np.ndarray | None = None
    scorer: Scorer | None = None
    view_px: int | None = None  # features of the coarse view at this scale (the gate's FID), None: full resolution
    notes: list[str] = field(default_factory=list)

    @property
    def train_nn_median(self) -> float:
        return float(np.median(self.train_nn))

    @property
    def near_copy_threshold(self) -> float:
        return self.near_copy_ratio * self.train_nn_median


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
    compared_with: str = "all classes"  # the reference the FID and its floor used
    fid_view_px: int | None = None  # the FID's coarse view (None: full resolution)
    confidence: np.ndarray | None = None  # [n] P(requested class)
    predicted: list[str] | None = None  # [n] the classifier's top class
    confidence_by_class: dict[str, float] = field(default_factory=dict)
    nn_distance: np.ndarray | None = None  # [n]
    nn_index: np.ndarray | None = None  # [n] index into Reference.train
    near_copy: np.ndarray | None = None  # [n] bool
    share_below_train_p5: float | None = None  # shown, not judged (too noisy at batch size)
    metrics: dict[str, Any] = field(default_factory=dict)  # metrics.json-style keys the floors read
    floors: dict[str, dict[str, Any]] = field(default_factory=dict)  # gate_floors-style entries
    passed: bool | None = None  # None: nothing the floors could judge
    notes: list[str] = field(default_factory=list)


def build_reference(prepared: PreparedData, scorer: Scorer | None, size: int = 1000, floor_pool: int = 1000,
                    near_copy_ratio: float = 0.2, nn_queries: int = 500, seed: int = 0,
                    view_px: int | None = K.GATE_PX, max_train: int = 20_000) -> Reference:
    """Cacheable reference for one model: training images, held-out images, features, own NN distances.

    ``max_train``: training images held (a seeded sample of a larger split), which bounds the app's
    memory whatever the dataset's size.

    ``view_px``: the FID-domain features are taken through the coarse view at this scale, as the gate's
    FID (``promote.gate.fid_metric``, ``fid_domain_16px``) is; None: at full resolution.
    """
    from medsynth.metrics import train_self_nn

    rng = np.random.default_rng(seed)
    train, train_y = prepared.sample("train", max_train, seed)
    held_split = "test" if prepared.count("test") >= 2 else "val"
    held, held_y = prepared.split(held_split)
    keep = rng.permutation(len(held))[:floor_pool]
    held, held_y = held[keep], np.asarray(held_y)[keep]
    ref = Reference(train=train, train_labels=np.asarray(train_y), held_out=held, held_out_labels=held_y,
                    classes=prepared.classes, source=str(prepared.root), data_hash=prepared.data_hash,
                    near_copy_ratio=near_copy_ratio, train_nn=train_self_nn(train, nn_queries, seed), scorer=scorer,
                    view_px=view_px)
    if scorer is not None:
        pick = rng.permutation(len(train))[:size]
        ref.feats = view_features(ref, train[pick])
        ref.feats_labels = ref.train_labels[pick]
        ref.held_out_feats = view_features(ref, held)
    else:
        ref.notes.append("no domain classifier found: FID-domain and the judge are unavailable "
                         "(run `medsynth evaluate` to train it)")
    return ref


def view_features(ref: Reference, images: np.ndarray) -> np.ndarray:
    """Domain features of ``images`` through the reference's view (the coarse view at ``view_px``)."""
    from medsynth.imaging import coarse_view

    x = coarse_view(images, ref.view_px) if ref.view_px else images
    return np.asarray(ref.scorer.features(x), dtype=np.float64)


def _floor_draw(ref: Reference, labels: np.ndarray | None, n: int, rng: np.random.Generator) -> np.ndarray | None:
    """Indices of ``n`` held-out real images with the batch's class counts (None when too few)."""
    pool = ref.held_out_feats
    if pool is None:
        return None
    if labels is None or ref.held_out_labels is None:
        return rng.choice(len(pool), n, replace=False) if len(pool) >= n else None
    out = []
    for c, cnt in zip(*np.unique(labels, return_counts=True), strict=True):
        cls = np.flatnonzero(ref.held_out_labels == c)
        if len(cls) < cnt:
            return None
        out.append(rng.choice(cls, cnt, replace=False))
    return np.concatenate(out)


def evaluate_batch(images: np.ndarray, labels: Sequence[int] | None, classes: Sequence[str], ref: Reference,
                   bootstrap: int = 20, floor_draws: int = 10, seed: int = 0, policy: Any = None) -> BatchEval:
    """FID-domain against its same-n, same-class real floor, the judge, privacy, and the gate's floors.

    ``policy``: the gate policy (``promote.gate``; default params.yaml's).
    """
    from medsynth.components.gate import floor_checks, floors_dict, gate_policy
    from medsynth.metrics import privacy_against

    t0 = time.perf_counter()
    n = len(images)
    out = BatchEval(n=n, seconds=0.0, notes=list(ref.notes))
    if images.shape[-1] != ref.train.shape[-1]:
        out.notes.append(f"the reference is {ref.train.shape[-1]} px and the images {images.shape[-1]} px: "
                         "no live evaluation")
        out.seconds = time.perf_counter() - t0
        return out
    lab = None if labels is None or not len(classes) else np.asarray(labels, dtype=np.int64).reshape(-1)
    m = out.metrics
    # 3. privacy, with the evaluation's function and the training set's cached own distances
    priv = privacy_against(images, ref.train, ref.train_nn, ref.near_copy_ratio)
    out.nn_distance, out.nn_index = priv.synth_nn, priv.synth_nn_index
    out.near_copy = priv.synth_nn < priv.threshold
    s = priv.summary()
    m[K.PRIVACY_NEAR_COPY_SHARE] = s["near_copy_share"]
    # the share below the training set's 5th percentile is ~0.05 for a good generator: on 16-64 images its
    # sampling noise alone would cross the gate's limit often, so it is shown, not judged, here
    out.share_below_train_p5 = s["share_below_train_p5"]
    sc = ref.scorer
    if sc is not None and ref.feats is not None:
        feats = view_features(ref, images)
        _fid(out, ref, feats, lab, classes, bootstrap, floor_draws, np.random.default_rng(seed))
        _judge(out, sc, images, lab, classes)
    policy = policy or gate_policy()
    checks = floor_checks(policy, m, conditional=lab is not None and len(classes) > 1, measured_only=True)
    if checks:
        out.floors, out.passed = floors_dict(checks), all(c.passed for c in checks)
    out.seconds = time.perf_counter() - t0
    return out


def _fid(out: BatchEval, ref: Reference, feats: np.ndarray, lab: np.ndarray | None, classes: Sequence[str],
         bootstrap: int, floor_draws: int, rng: np.random.Generator) -> None:
    """1. FID-domain with its bootstrap spread and the real floor at the same n and classes."""
    n = len(feats)
    if n < 2:
        out.notes.append("FID-domain needs at least 2 images")
        return
    reference = ref.feats
    if lab is not None and len(np.unique(lab)) == 1 and ref.feats_labels is not None:
        c = int(lab[0])  # a per-class batch: compare like with like
        reference = ref.feats[ref.feats_labels == c]
        out.compared_with = f"class {classes[c]} only"
    if len(reference) < 2:
        out.notes.append(f"FID-domain: too few real reference images for {out.compared_with}")
        return
    out.fid, out.fid_view_px = frechet(reference, feats), ref.view_px
    boots = [frechet(reference, feats[rng.integers(0, n, n)]) for _ in range(max(0, bootstrap))]
    if boots:
        out.fid_boot_std = float(np.std(boots))
        out.fid_boot_interval = (float(np.percentile(boots, 5)), float(np.percentile(boots, 95)))
    floors = []
    for _ in range(max(1, floor_draws)):
        idx = _floor_draw(ref, lab, n, rng)
        if idx is None:
            break
        floors.append(frechet(reference, ref.held_out_feats[idx]))
    if floors:
        out.real_floor_mean, out.real_floor_std = float(np.mean(floors)), float(np.std(floors))
        key = K.at_px(K.FID_DOMAIN, ref.view_px) if ref.view_px else K.FID_DOMAIN  # the gate's key for this view
        out.metrics.update({key: out.fid, K.floor(key): out.real_floor_mean})
    else:
        out.notes.append(f"real floor unavailable: fewer than {n} held-out real images of these classes")


def _judge(out: BatchEval, sc: Scorer, images: np.ndarray, lab: np.ndarray | None, classes: Sequence[str]) -> None:
    """2. The judge: confidence for the requested class and accuracy among the dataset's classes, through
    the same 32 px coarse view as ``medsynth evaluate``'s judge (components/eval_classes.judge)."""
    from medsynth.imaging import coarse_view

    probs = np.asarray(sc.proba(coarse_view(images, K.JUDGE_PX)))
    out.predicted = [sc.classes[i] for i in probs.argmax(1)]
    if lab is None:
        return
    wanted = [sc.index_of(classes[int(y)]) for y in lab]
    idx = [sc.index_of(c) for c in classes]
    if any(w is None for w in wanted) or any(i is None for i in idx):
        out.notes.append("the domain classifier was trained on other classes: no per-class confidence")
        return
    conf = probs[np.arange(len(lab)), np.asarray(wanted)]
    out.confidence = conf
    pred = probs[:, idx].argmax(1)
    present = sorted(set(int(v) for v in lab))
    for y in present:
        mask = lab == y
        out.confidence_by_class[classes[y]] = float(conf[mask].mean())
        out.metrics[K.cond_accuracy_of(classes[y])] = float((pred[mask] == y).mean())
    if len(classes) > 1:
        out.metrics[K.COND_ACCURACY] = float((pred == lab).mean())
        if len(present) > 1:  # the majority-class rule means nothing for a one-class batch
            out.metrics[K.COND_MAJORITY_SHARE] = float(np.bincount(lab).max() / len(lab))


def fid_sentence(ev: BatchEval) -> str:
    """The FID-domain result with its uncertainty in words."""
    if ev.fid is None:
        return "FID-domain: not available"
    view = f" ({ev.fid_view_px} px view)" if ev.fid_view_px else ""
    s = f"FID-domain{view} {ev.fid:.2f} on {ev.n} images, compared with {ev.compared_with}"
    if ev.fid_boot_interval is not None:
        lo, hi = ev.fid_boot_interval
        s += f" (bootstrap 90% range {lo:.2f}-{hi:.2f})"
    if ev.real_floor_mean is not None:
        s += (f"; {ev.n} real held-out images of the same classes score {ev.real_floor_mean:.2f} ± "
              f"{ev.real_floor_std:.2f} against the same reference")
    return s + (". FID from a few dozen images is biased upwards (it shrinks as n grows): compare it with the "
                "real floor at the same n, not with the model card's FID, which uses thousands of images.")


def verdict_sentence(ev: BatchEval) -> str:
    """Whether the batch passes the gate's floors, in plain words."""
    if ev.passed is None:
        return "No verdict: nothing the gate's floors measure could be computed for this batch."
    measured = ", ".join(ev.floors)
    if ev.passed:
        return (f"This batch passes the gate's floors that a batch can measure ({measured}). C2ST, coverage, "
                "diversity and the privacy share need hundreds of images: `medsynth evaluate` checks them before a "
                "model is promoted.")
    why = "; ".join(v["detail"] for v in ev.floors.values() if not v["passed"])
    return f"This batch FAILS the gate's floors: {why}."
