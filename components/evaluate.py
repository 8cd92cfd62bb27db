"""Evaluate a generator, or a fixed set of images, against the real test split: quality, detectability,
diversity, privacy and utility, and the gate's absolute floors.

One code path for both: a generator is first turned into an :class:`ImageSet` (``n_generated``
images; conditional models get labels in the training split's class proportions), a set of files
(``medsynth evaluate --images``, medsynth/imageset.py) is read into one; :func:`score` does the rest.

1. Check the source fits the dataset (resolution, classes); generate or read the images (:func:`run`).
2. :func:`score` runs the named stages of components/eval_scores.py (whole set) and
   components/eval_classes.py (what needs class labels) on one ``EvalContext``, each
   timed (``timing_s``) and ticked on the progress bar, each returning a small typed result whose
   ``entries()`` are its metrics.json keys: features (the domain extractor, once per set),
   distribution (FID-domain / KID-domain / PRDC beside the real-train floor, bootstrap intervals),
   c2st (detectability and its real-vs-real control), pixel_and_diversity, conditional (the judge
   and per-class scores), privacy, utility, standard_fid.
3. The gate's absolute floors (components/gate.py, ``promote.gate``) applied to these numbers.
4. metrics.json + report.md + figures in ``out_dir`` (components/eval_report.py); params, metrics
   and artifacts in MLflow.

Where things go: a new metric's key in medsynth/metric_keys.py (its table lists every key, its
meaning and when it is absent); a new stage in components/eval_scores.py or eval_classes.py plus
one line in :func:`score`; how it was measured in :func:`_protocol`; its report line in eval_report.py.

Small test splits (fewer than ``min_samples`` real test or train images, e.g. BreastMNIST's 156 test
images): no rerun can add real images, so such an evaluation is not flagged ``unstable`` (which would
block the gate forever). It is flagged ``small_reference`` with the reason, every FID carries its
bootstrap interval, and the gate's FID floor uses the *upper* end of the ratio's interval, so a small
reference set makes the gate stricter, never looser. ``unstable`` is kept for what a user can fix:
fewer compared images than ``min_samples`` (raise ``evaluate.n_generated``, or bring more images).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from medsynth import metric_keys as K
from medsynth.components import eval_classes as C
from medsynth.components import eval_scores as S
from medsynth.components.gate import GatePolicy, floor_checks, floors_dict, gate_policy, grade
from medsynth.config import params_defaults, to_dict
from medsynth.errors import ConfigError, InputError
from medsynth.generator import ImageGenerator
from medsynth.prepared import PreparedData
from medsynth.project import ProjectConfig

T = TypeVar("T")

# MedMNIST v2 (Yang et al. 2023, Sci Data) test ACC/AUC of ResNet-18 at 28 px, by class set.
MEDMNIST_REFERENCE = {
    frozenset({"normal", "pneumonia"}): {"dataset": "PneumoniaMNIST", "model": "ResNet-18 (28)", "acc": 0.854, "auc": 0.944},
    frozenset({"pediatricnormal", "pediatricpneumonia"}): {
        "dataset": "PneumoniaMNIST", "model": "ResNet-18 (28)", "acc": 0.854, "auc": 0.944},
}


@dataclass(frozen=True)
@params_defaults("evaluate")
class EvaluateConfig:
    """``evaluate:`` in params.yaml."""

    n_generated: int
    truncation: float
    extractor: str
    min_samples: int
    kid_subset_size: int
    kid_subsets: int
    prdc_k: int
    diversity_pairs: int
    near_copy_ratio: float
    privacy_max_train_queries: int
    closest_pairs: int
    utility: bool
    utility_epochs: int
    utility_max_train: int
    utility_pseudo_labels: bool  # unconditional generators: label synthetic images with classifier (a)
    grid_images: int
    inception_weights: str
    c2st: bool  # classifier two-sample test (capacity and budget: medsynth/c2st.py C2STSettings)
    c2st_max_images: int  # images per set the C2ST uses (0 = C2STSettings' budget)
    bootstrap: int  # paired bootstrap draws for the FID-domain intervals (0 = none)
    max_real_images: int  # real images per split the scores hold (a seeded sample of larger splits)

    def check(self) -> None:
        bounds = {"n_generated": (10, 10_000), "min_samples": (2, 100_000), "kid_subsets": (1, 1000),
                  "kid_subset_size": (2, 10_000), "prdc_k": (1, 100), "diversity_pairs": (2, 10_000),
                  "privacy_max_train_queries": (10, 50_000), "closest_pairs": (1, 256),
                  "utility_epochs": (1, 100), "utility_max_train": (10, 100_000), "grid_images": (1, 256),
                  "bootstrap": (0, 1000), "c2st_max_images": (0, 100_000), "max_real_images": (100, 1_000_000)}
        for name, (lo, hi) in bounds.items():
            v = getattr(self, name)
            if not lo <= v <= hi:
                raise ConfigError(f"evaluate.{name}: must be in {lo}..{hi}, got {v}")
        if not 0 < self.truncation <= 1:
            raise ConfigError(f"evaluate.truncation: must be in (0, 1], got {self.truncation}")
        if 0 < self.c2st_max_images < 8:
            raise ConfigError(f"evaluate.c2st_max_images: 0 (the default budget) or at least 8, got {self.c2st_max_images}")
        if not 0 <= self.near_copy_ratio < 1:
            raise ConfigError(f"evaluate.near_copy_ratio: must be in [0, 1), got {self.near_copy_ratio}")


@dataclass
class ImageSet:
    """The images under evaluation, whatever made them: float32 ``[N, 1, R, R]`` in [-1, 1]."""

    images: np.ndarray
    labels: np.ndarray | None  # int64 [N] class indices of the dataset (a conditional set), or None
    source: str  # what made them: a model URI, a generator file, "images:<path>", "reference:<split>"
    kind: str = "generator"  # generator | images | reference
    sha256: str = ""  # images: the file/folder hash
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        """The band on the report's figures."""
        return {"reference": f"REAL {self.source.removeprefix('reference:')} images (reference)",
                "images": "SCORED IMAGES (user-supplied)"}.get(self.kind, "SYNTHETIC")


def image_set_from_files(path: str | os.PathLike, data: PreparedData) -> ImageSet:
    """An :class:`ImageSet` from an .npz or PNG folder (medsynth/imageset.py checks it)."""
    from medsynth.imageset import load_image_set
    from medsynth.prepared import to_unit

    loaded = load_image_set(path, data.resolution, data.classes)
    labels = loaded.labels if loaded.labels is not None and data.num_classes > 1 else None
    notes = [f"scored {len(loaded.images)} images from {loaded.path} ({loaded.fmt}, sha256 {loaded.sha256[:12]}); "
             "evaluate.n_generated does not apply"]
    if loaded.labels is not None and labels is None:
        notes.append("labels ignored: the prepared data has a single class")
    return ImageSet(to_unit(loaded.images)[:, None], labels, f"images:{loaded.path.resolve()}", "images",
                    loaded.sha256, notes)


def generate_set(cfg: EvaluateConfig, gen: ImageGenerator, data: PreparedData, conditional: bool,
                 seed: int, source: str = "") -> ImageSet:
    """``cfg.n_generated`` images of ``gen`` (conditional: labels in the training split's proportions)."""
    _, y_tr = data.split_uint8("train")
    n = cfg.n_generated
    labels = proportional_labels(y_tr, data.num_classes, n, seed) if conditional else None
    x = generate_checked(gen, n, seed, labels, cfg.truncation, data.resolution)
    if isinstance(gen, HeldOutReal):
        return ImageSet(x, labels, source or f"reference:{gen.split}", "reference")
    return ImageSet(x, labels, source or "generator", "generator")


@dataclass
class EvalResult:
    out_dir: Path
    metrics: dict[str, Any]
    seconds: float
    run_id: str | None = None


class HeldOutReal:
    """An ImageGenerator that returns *real* images of one split: the reference point for metrics.

    Not synthetic: use it to see what real-vs-real scores look like (and, fed the training split,
    to check that the privacy test flags copies).
    """

    def __init__(self, prepared: PreparedData, split: str = "val", conditional: bool = True) -> None:
        self.images, self.labels = prepared.split(split)
        self.resolution = prepared.resolution
        self.classes = prepared.classes if conditional else []
        self.split = split

    def generate(self, n: int, seed: int, labels: Sequence[int] | np.ndarray | None = None,
                 truncation: float = 1.0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        if labels is None:
            return self.images[_draw(np.arange(len(self.images)), n, rng)]
        labels = np.asarray(labels).reshape(-1)
        out = np.empty((len(labels), 1, self.resolution, self.resolution), np.float32)
        for c in np.unique(labels):
            pos = np.flatnonzero(labels == c)
            out[pos] = self.images[_draw(np.flatnonzero(self.labels == c), len(pos), rng)]
        return out


def _draw(pool: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` items of ``pool``: without replacement while possible, then further permutations."""
    if len(pool) == 0:
        raise InputError("held-out real generator: no images of a requested class in that split")
    reps = int(np.ceil(n / len(pool)))
    return np.concatenate([rng.permutation(pool) for _ in range(reps)])[:n]


def proportional_labels(train_y: np.ndarray, k: int, n: int, seed: int) -> np.ndarray:
    """``n`` labels in the training split's class proportions (largest-remainder rounding), shuffled."""
    freq = np.bincount(train_y, minlength=k).astype(np.float64)
    share = freq / freq.sum() * n
    counts = np.floor(share).astype(int)
    counts[np.argsort(-(share - counts))[: n - counts.sum()]] += 1
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(k), counts))


def check_generator(gen: ImageGenerator, data: PreparedData) -> bool:
    """Fail early when the generator cannot be compared with this dataset. Returns ``conditional``."""
    if int(gen.resolution) != data.resolution:
        raise InputError(f"{data.root}: the generator makes {gen.resolution} px images but the dataset is "
                         f"{data.resolution} px (evaluate it on data preprocessed at its resolution)")
    classes = list(getattr(gen, "classes", []) or [])
    if classes and classes != data.classes:
        raise InputError(f"{data.root}: the generator's classes {classes} differ from the dataset's {data.classes}")
    return bool(classes)


def generate_checked(gen: ImageGenerator, n: int, seed: int, labels: np.ndarray | None,
                     truncation: float, resolution: int) -> np.ndarray:
    """Generate and check shape and values (clear error instead of garbage metrics)."""
    x = np.asarray(gen.generate(n, seed, labels=labels, truncation=truncation))
    if x.shape != (n, 1, resolution, resolution):
        raise InputError(f"generator output has shape {tuple(x.shape)}; expected {(n, 1, resolution, resolution)} "
                         "(N x 1 x R x R, R = the dataset's resolution)")
    if not np.isfinite(x).all():
        raise InputError("generator output contains NaN or infinite values")
    if x.min() < -1.001 or x.max() > 1.001:
        raise InputError(f"generator output in [{x.min():.3f}, {x.max():.3f}]; expected [-1, 1]")
    return np.clip(x, -1, 1).astype(np.float32, copy=False)


def medmnist_reference(classes: list[str]) -> dict[str, Any] | None:
    key = frozenset(c.split("/")[-1].lower() for c in classes)
    return MEDMNIST_REFERENCE.get(key)


def run(cfg: EvaluateConfig, project: ProjectConfig, generator: ImageGenerator | ImageSet,
        prepared_dir: str | os.PathLike, out_dir: str | os.PathLike, extractor: Any = None,
        track: bool = True, model_uri: str = "", tags: dict[str, str] | None = None,
        gate: GatePolicy | None = None, c2st_settings: Any = None) -> EvalResult:
    """Score ``generator`` (or a fixed :class:`ImageSet`) against the real test split; write ``out_dir``.

    ``extractor``: a loaded medsynth.training.extractor.Extractor (default: ``evaluate.extractor`` or
    ``<artifacts>/features/domain_cnn``, which must exist: run ``medsynth features``).
    ``gate``: the policy whose absolute floors are recorded in metrics.json (``promote.gate``;
    default: params.yaml's). ``c2st_settings``: medsynth.c2st.C2STSettings (default: its defaults).

    Raises:
        InputError: the source does not fit the dataset, bad output, no extractor, too few images.
    """
    from medsynth.components import eval_report
    from medsynth.fileio import atomic_dir, write_json
    from medsynth.training.extractor import load_extractor

    t0 = time.perf_counter()
    data = PreparedData.load(prepared_dir)
    if isinstance(generator, ImageSet):
        check_image_set(generator, data)
    else:
        conditional = check_generator(generator, data)
    if extractor is None:
        root = Path(cfg.extractor) if cfg.extractor else project.artifacts_path() / "features" / "domain_cnn"
        extractor = load_extractor(root)
    if isinstance(generator, ImageSet):
        m, details = score(cfg, generator, data, extractor, seed=project.seed, gate=gate, c2st_settings=c2st_settings)
    else:
        m, details = compute(cfg, generator, data, extractor, conditional, seed=project.seed, gate=gate,
                             c2st_settings=c2st_settings, source=model_uri)
    m[K.SECONDS] = time.perf_counter() - t0
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        eval_report.write(tmp, m, details)
        write_json(tmp / "metrics.json", m)
    run_id = None
    if track:
        run_id = _track(project, cfg, m, out, data, m[K.MODEL_URI], tags or {})
    return EvalResult(out, m, m[K.SECONDS], run_id)


def check_image_set(s: ImageSet, data: PreparedData) -> None:
    """Fail early when a fixed image set cannot be compared with this dataset."""
    x = s.images
    if x.ndim != 4 or x.shape[1:] != (1, data.resolution, data.resolution):
        raise InputError(f"{s.source}: images of shape {tuple(x.shape[1:])}; the dataset needs "
                         f"(1, {data.resolution}, {data.resolution})")
    if s.labels is not None and (len(s.labels) != len(x) or s.labels.min() < 0 or s.labels.max() >= data.num_classes):
        raise InputError(f"{s.source}: labels must be one class index 0..{data.num_classes - 1} per image")


def compute(cfg: EvaluateConfig, gen: ImageGenerator, data: PreparedData, extractor: Any,
            conditional: bool, seed: int = 0, gate: GatePolicy | None = None, c2st_settings: Any = None,
            source: str = "") -> tuple[dict[str, Any], dict[str, Any]]:
    """Generate ``cfg.n_generated`` images and :func:`score` them: (flat metrics.json dict, figure arrays)."""
    t = time.perf_counter()
    s = generate_set(cfg, gen, data, conditional, seed, source)
    return score(cfg, s, data, extractor, seed, gate, c2st_settings, timing={"generate": round(time.perf_counter() - t, 3)})


class StageClock:
    """Runs the named stages in turn: a progress tick and the wall time of each (metrics.json ``timing_s``)."""

    def __init__(self, timing: dict[str, float] | None = None, steps: int = 10) -> None:
        from medsynth.progress import progress

        self._steps = iter(progress(range(steps), desc="evaluate", unit="step"))
        self.timing = dict(timing or {})
        self._t = time.perf_counter()

    def stage(self, name: str, fn: Callable[..., T], *args: Any) -> T:
        out = fn(*args)
        now = time.perf_counter()
        self.timing[name] = round(now - self._t, 3)
        self._t = now
        next(self._steps, None)
        return out


def score(cfg: EvaluateConfig, s: ImageSet, data: PreparedData, extractor: Any, seed: int = 0,
          gate: GatePolicy | None = None, c2st_settings: Any = None,
          timing: dict[str, float] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """All scores of one image set as (flat metrics.json dict, arrays for the figures).

    The stages of components/eval_scores.py and eval_classes.py in turn, each timed and ticked; their
    results' entries make metrics.json in this order (readers see insertion order; the file is
    written sorted).

    Raises:
        InputError: fewer than two images in the set, the train or the test split.
    """
    clock = StageClock(timing)
    ctx = S.EvalContext.of(cfg, s, data, extractor, seed)
    feats = clock.stage("features", S.features, ctx)
    dist = clock.stage("distribution", S.distribution, ctx, feats)
    det = clock.stage("c2st", S.detectability, ctx, c2st_settings)
    pix = clock.stage("pixel_and_diversity", S.pixel_and_diversity, ctx)
    by_class = clock.stage("conditional", C.per_class, ctx, feats)
    priv = clock.stage("privacy", S.privacy, ctx)
    util = clock.stage("utility", C.utility, ctx)
    std = clock.stage("standard_fid", S.standard_fid, ctx)
    m = {**_scored(s, ctx), **S.entries(dist, det, pix, by_class, priv, util, std),
         **_status(cfg, s, ctx, by_class, [*s.notes, *C.utility_notes(ctx, util)], clock.timing)}
    gate = gate or gate_policy()
    # one class: "follows its label" cannot fail and the majority share is 1, so the conditional
    # floors do not apply (promote treats such a model as unconditional too)
    m.update(clock.stage("floors", _floors, gate, m, ctx.conditional and data.num_classes > 1))
    c2st_protocol = det.protocol(S.per_class_c2st(ctx)) if det is not None else {"enabled": False}
    m[K.PROTOCOL] = _protocol(cfg, s, ctx, feats, dist, c2st_protocol, gate)
    details = {"label": s.label, "synthetic": s.kind != "reference", "x_g": ctx.x_g, "labels": ctx.labels,
               "x_tr": ctx.x_tr, "x_te": ctx.x_te, "nn_index": pix.nn_index, "nn_dist": pix.nn_dist,
               "privacy": priv.result, "classes": data.classes, "grid": cfg.grid_images, "closest": cfg.closest_pairs}
    return m, details


def _scored(s: ImageSet, ctx: S.EvalContext) -> dict[str, Any]:
    """What was scored: metrics.json's first entries."""
    return {K.CONDITIONAL: ctx.conditional, K.N_GENERATED: len(ctx.x_g), K.N_REAL_TEST: len(ctx.x_te),
            K.N_REAL_TRAIN: len(ctx.x_tr), K.N_FLOOR: len(ctx.x_fl), K.REAL_REFERENCE: s.kind == "reference",
            K.MODEL_URI: s.source, K.SOURCE: s.kind}


def _status(cfg: EvaluateConfig, s: ImageSet, ctx: S.EvalContext, by_class: C.PerClass | None, notes: list[str],
            timing: dict[str, float]) -> dict[str, Any]:
    """Whether the scores are stable, what the reference is, notes and the stage timings."""
    reasons, small = _sample_reasons(cfg, s, len(ctx.x_g), len(ctx.x_te), len(ctx.x_tr))
    return {K.UNSTABLE: bool(reasons), K.UNSTABLE_REASONS: reasons, K.SMALL_REFERENCE: bool(small),
            K.SMALL_REFERENCE_REASONS: small, K.PER_CLASS_UNSTABLE: by_class.unstable if by_class else [],
            K.UTILITY_REFERENCE: medmnist_reference(ctx.classes), K.NOTES: notes, K.TIMING_S: timing}


def _floors(gate: GatePolicy, m: dict[str, Any], conditional: bool) -> dict[str, Any]:
    """The gate's absolute floors applied to the scores so far, once (components/gate.py): recorded with
    the policy's fingerprint (promote reads them back) and the grade they give."""
    floors = floor_checks(gate, m, conditional)
    g, reason = grade(gate, m, floors, conditional)
    return {K.GATE_FLOORS_PASSED: all(c.passed for c in floors), K.GATE_FLOORS: floors_dict(floors),
            K.GATE_POLICY_SHA256: gate.sha256(), K.GATE_GRADE: g, K.GATE_GRADE_REASON: reason}


def _protocol(cfg: EvaluateConfig, s: ImageSet, ctx: S.EvalContext, feats: S.Features, dist: S.Distribution,
              c2st: dict[str, Any], gate: GatePolicy) -> dict[str, Any]:
    """metrics.json ``protocol``: how every number was measured."""
    from medsynth.metrics import resize_policy

    ext, data, n_te = ctx.extractor, ctx.data, len(ctx.x_te)
    return {
        "metric_names": "FID-domain / KID-domain: Frechet / kernel distance in the domain classifier's "
                        "feature space; NOT comparable with ImageNet-Inception FID",
        K.BACKBONE: ext.backbone, K.EXTRACTOR_SHA256: ext.meta["sha256"],
        "extractor_test_accuracy": ext.meta.get("test_accuracy"),
        "feature_dim": int(feats.test.shape[1]), "resize_policy": resize_policy(int(ext.meta["resolution"])),
        K.MODEL_URI: s.source, K.SOURCE: s.kind, K.SOURCE_SHA256: s.sha256 or None,
        "reference_set": f"real test split ({n_te} images)",
        "floor": f"real train sample of {len(ctx.x_fl)} images vs the real test split",
        "images": {"generated": len(ctx.x_g), "real_test": n_te, "real_train": len(ctx.x_tr)},
        "dataset_resolution": data.resolution, "classes": data.classes, K.DATA_HASH: data.data_hash,
        "kid": f"subset size {dist.compared.kid_subset_size}, {cfg.kid_subsets} subsets",
        "bootstrap": (f"{cfg.bootstrap} paired resamples of the real test, compared and floor sets; "
                      "5th-95th percentiles") if cfg.bootstrap else "off",
        "c2st": c2st,
        "nn_distance": "RMS pixel difference on the [0,1] scale (PSNR = -20 log10 RMS)",
        "diversity": "MS-SSIM (kernel 5, 3 scales) and SSIM between random distinct pairs",
        "gate_policy": to_dict(gate),
        "seed": ctx.seed, "truncation": cfg.truncation, "config": to_dict(cfg),
    }


def _sample_reasons(cfg: EvaluateConfig, s: ImageSet, n: int, n_test: int, n_train: int) -> tuple[list[str], list[str]]:
    """(unstable reasons: what the user can fix, small-reference reasons: what the dataset is)."""
    ms = cfg.min_samples
    fix = ("raise evaluate.n_generated" if s.kind != "images" else "score more images")
    unstable = [f"generated: {n} images < evaluate.min_samples={ms} ({fix} to at least {ms})"] if n < ms else []
    small = [f"real {name} split: {cnt} images < evaluate.min_samples={ms}; a rerun cannot add real images, so "
             "the scores carry bootstrap intervals and the gate's FID floor uses the upper end of the ratio's interval"
             for name, cnt in (("test", n_test), ("train", n_train)) if cnt < ms]
    return unstable, small


def _track(project, cfg, m, out: Path, data: PreparedData, model_uri: str, tags: dict[str, str]) -> str:
    import mlflow

    from medsynth.tracking import step_run

    p = m[K.PROTOCOL]
    params = {"evaluate": to_dict(cfg), K.BACKBONE: p[K.BACKBONE], K.EXTRACTOR_SHA256: p[K.EXTRACTOR_SHA256],
              "resize_policy": p["resize_policy"], K.N_GENERATED: m[K.N_GENERATED],
              K.N_REAL_TEST: m[K.N_REAL_TEST], K.MODEL_URI: model_uri or "none"}
    all_tags = {"medsynth.eval.backbone": p[K.BACKBONE], "medsynth.eval.metric_names": "FID-domain/KID-domain",
                "medsynth.eval.unstable": str(m[K.UNSTABLE]).lower(), "medsynth.model_uri": model_uri or "none",
                "medsynth.eval.source": m[K.SOURCE], "medsynth.eval.extractor_sha256": p[K.EXTRACTOR_SHA256],
                "medsynth.eval.gate_floors_passed": str(m[K.GATE_FLOORS_PASSED]).lower(), **tags}
    if p.get(K.SOURCE_SHA256):
        all_tags["medsynth.eval.source_sha256"] = p[K.SOURCE_SHA256]
    with step_run(project, "evaluate", params, data.data_hash, tags=all_tags) as run:
        nums = {key: float(v) for key, v in m.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)}
        nums.update({flag: float(m[flag]) for flag in (K.UNSTABLE, K.SMALL_REFERENCE, K.GATE_FLOORS_PASSED)})
        mlflow.log_metrics(nums)
        mlflow.log_artifacts(str(out), "evaluation")
        return run.info.run_id
