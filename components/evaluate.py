"""Evaluate a generator, or a fixed set of images, against the real test split: quality, detectability,
diversity, privacy and utility, and the gate's absolute floors.

One code path for both: a generator is first turned into an :class:`ImageSet` (``n_generated``
images; conditional models get labels in the training split's class proportions), a set of files
(``medsynth evaluate --images``, medsynth/imageset.py) is read into one; :func:`score` does the rest.

1. Check the source fits the dataset (resolution, classes); generate or read the images.
2. Extract features once per set with the domain extractor (components/features.py).
3. FID-domain / KID-domain / PRDC vs the real test split, beside the same scores of a real-train
   sample of the same size (the floor: what "as good as real" looks like); a paired bootstrap gives
   intervals for FID-domain, its floor and their ratio.
4. C2ST (components/eval_scores.py, medsynth/c2st.py): can a CNN tell the set from the real train
   split? ROC AUC on held-out halves (0.5 = indistinguishable), with its real-vs-real control.
5. SSIM / PSNR of each image to its nearest real test image (pixel RMS); MS-SSIM and SSIM between
   random pairs vs real pairs (diversity, mode collapse).
6. Conditional sets: the judge's accuracy per requested label, the majority-class share, and per class
   FID-domain, coverage, diversity and C2ST beside their floors (the worst class decides in the gate).
7. Privacy: nearest-training-image distance of each image vs the training set's own nearest-neighbour
   distances; near-copy share, share below the training set's 5th percentile; closest pairs as an image.
8. Utility (>= 2 classes): classifiers on (a) real, (b) real + synthetic, (c) synthetic only,
   (d) real duplicated to (b)'s count, tested on the real test split.
9. The gate's absolute floors (components/gate.py, ``promote.gate``) applied to these numbers.
10. metrics.json + report.md + figures in ``out_dir``; params, metrics and artifacts in MLflow.

Small test splits (fewer than ``min_samples`` real test or train images, e.g. BreastMNIST's 156 test
images): no rerun can add real images, so such an evaluation is not flagged ``unstable`` (which would
block the gate forever). It is flagged ``small_reference`` with the reason, every FID carries its
bootstrap interval, and the gate's FID floor uses the *upper* end of the ratio's interval, so a small
reference set makes the gate stricter, never looser. ``unstable`` is kept for what a user can fix:
fewer compared images than ``min_samples`` (raise ``evaluate.n_generated``, or bring more images).

metrics.json contract (what the gate reads; the same flat keys are the MLflow metrics)::

    fid_domain, kid_domain_mean, kid_domain_std      compared set vs real test (lower is better)
    fid_domain_floor, kid_domain_floor_mean          real-train sample vs real test (the floor)
    fid_domain_ratio_to_floor                        fid_domain / fid_domain_floor
    fid_domain[_floor|_ratio_to_floor]_lo|_hi        paired bootstrap 5th/95th percentiles
                                                     (evaluate.bootstrap draws; absent when 0)
    c2st_auc, c2st_auc_lo, c2st_auc_hi               C2ST ROC AUC (0.5 = indistinguishable), 95% interval
    c2st_auc_floor[_lo|_hi]                          real train vs real test control at the same count
    c2st_n_real, c2st_n_synth, c2st_n_floor, c2st_seconds
    prdc_precision|recall|density|coverage[_floor]   Naeem et al. 2020, k = evaluate.prdc_k
    nn_ssim_mean, nn_psnr_mean[_floor]               to the nearest real test image
    diversity_ms_ssim_generated|_real, diversity_ssim_generated|_real   lower = more diverse
    cond_accuracy, cond_accuracy_<class>, cond_in_domain_share, cond_majority_share, cond_judge
    fid_domain_class_<class>, fid_domain_floor_class_<class>, prdc_coverage[_floor]_class_<class>,
    diversity_ms_ssim_generated|real_class_<class>, c2st_auc[_lo|_hi]_class_<class>
                                                     conditional sets only
    privacy_near_copy_share, privacy_n_near_copies, privacy_nn_median_ratio,
    privacy_share_below_train_p5, privacy_synth_nn_median, privacy_train_nn_median,
    privacy_near_copy_threshold, privacy_train_nn_p5
    utility_acc|auc_real, _real_plus_synth, _synth_only, _real_dup      when utility ran
    utility_pseudo_labels                            1: synthetic labels came from classifier (a)
    fid_standard                                     only with local Inception weights
    gate_floors_passed (bool), gate_floors {name: {value, limit, passed, detail}}
                                                     the gate's absolute floors (promote.gate)
    model_uri (str), source (generator|images|reference)   what was scored (promote checks it)
    n_generated, n_real_test, n_real_train, n_floor, seconds, timing_s {stage: wall s}
    real_reference (bool)                            true: the "generator" returned real images
    unstable (bool), unstable_reasons (list[str])    true: fewer compared images than min_samples
    small_reference (bool), small_reference_reasons  the real test/train split is below min_samples
    conditional (bool), protocol {backbone, extractor_sha256, data_hash, model_uri, c2st settings,
    bootstrap, gate_policy, resize_policy, image counts, ...}, per_class_unstable, utility_reference
    (MedMNIST v2), notes
A key that does not apply is absent (never NaN), so a gate treats "absent" as "not measured".
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medsynth.components.gate import GatePolicy, floor_checks, floors_dict
from medsynth.config import to_dict
from medsynth.errors import ConfigError, InputError
from medsynth.generator import ImageGenerator
from medsynth.prepared import PreparedData
from medsynth.project import ProjectConfig

# MedMNIST v2 (Yang et al. 2023, Sci Data) test ACC/AUC of ResNet-18 at 28 px, by class set.
MEDMNIST_REFERENCE = {
    frozenset({"normal", "pneumonia"}): {"dataset": "PneumoniaMNIST", "model": "ResNet-18 (28)", "acc": 0.854, "auc": 0.944},
    frozenset({"pediatricnormal", "pediatricpneumonia"}): {
        "dataset": "PneumoniaMNIST", "model": "ResNet-18 (28)", "acc": 0.854, "auc": 0.944},
}


@dataclass(frozen=True)
class EvaluateConfig:
    """``evaluate:`` in params.yaml."""

    n_generated: int = 2000
    truncation: float = 1.0
    extractor: str = ""
    min_samples: int = 200
    kid_subset_size: int = 1000
    kid_subsets: int = 50
    prdc_k: int = 5
    diversity_pairs: int = 500
    near_copy_ratio: float = 0.2
    privacy_max_train_queries: int = 2000
    closest_pairs: int = 16
    utility: bool = True
    utility_epochs: int = 3
    utility_max_train: int = 2000
    utility_pseudo_labels: bool = True  # unconditional generators: label synthetic images with classifier (a)
    grid_images: int = 64
    inception_weights: str = ""
    c2st: bool = True  # classifier two-sample test (capacity and budget: medsynth/c2st.py C2STSettings)
    c2st_max_images: int = 0  # images per set the C2ST uses (0 = C2STSettings' budget)
    bootstrap: int = 50  # paired bootstrap draws for the FID-domain intervals (0 = none)

    def check(self) -> None:
        bounds = {"n_generated": (10, 10_000), "min_samples": (2, 100_000), "kid_subsets": (1, 1000),
                  "kid_subset_size": (2, 10_000), "prdc_k": (1, 100), "diversity_pairs": (2, 10_000),
                  "privacy_max_train_queries": (10, 50_000), "closest_pairs": (1, 256),
                  "utility_epochs": (1, 100), "utility_max_train": (10, 100_000), "grid_images": (1, 256),
                  "bootstrap": (0, 1000), "c2st_max_images": (0, 100_000)}
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

    ``extractor``: a loaded medsynth.extractor.Extractor (default: ``evaluate.extractor`` or
    ``<artifacts>/features/domain_cnn``, which must exist: run ``medsynth features``).
    ``gate``: the policy whose absolute floors are recorded in metrics.json (``promote.gate``;
    default: GatePolicy()). ``c2st_settings``: medsynth.c2st.C2STSettings (default: its defaults).

    Raises:
        InputError: the source does not fit the dataset, bad output, no extractor, too few images.
    """
    from medsynth.components import eval_report
    from medsynth.extractor import load_extractor
    from medsynth.fileio import atomic_dir, write_json

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
    m["seconds"] = time.perf_counter() - t0
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        eval_report.write(tmp, m, details)
        write_json(tmp / "metrics.json", m)
    run_id = None
    if track:
        run_id = _track(project, cfg, m, out, data, m["model_uri"], tags or {})
    return EvalResult(out, m, m["seconds"], run_id)


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


def score(cfg: EvaluateConfig, s: ImageSet, data: PreparedData, extractor: Any, seed: int = 0,
          gate: GatePolicy | None = None, c2st_settings: Any = None,
          timing: dict[str, float] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """All scores of one image set as (flat metrics.json dict, arrays for the figures)."""
    from medsynth import metrics as M
    from medsynth.components import eval_scores as S
    from medsynth.progress import progress

    steps = iter(progress(range(10), desc="evaluate", unit="step"))
    timing = dict(timing or {})
    clock = [time.perf_counter()]

    def tick(stage: str) -> None:  # a progress tick and the stage's wall time
        now = time.perf_counter()
        timing[stage] = round(now - clock[0], 3)
        clock[0] = now
        next(steps, None)

    x_g, labels = s.images, s.labels
    conditional = labels is not None
    x_tr, y_tr = data.split("train")
    x_te, y_te = data.split("test")
    k, n = data.num_classes, len(x_g)
    if len(x_te) < 2 or len(x_tr) < 2:
        raise InputError(f"{data.root}: the train and test splits need at least two images each")
    if n < 2:
        raise InputError(f"{s.source}: {n} image(s); at least 2 are needed (and {cfg.min_samples} for stable scores)")
    rng = np.random.default_rng(seed + 1)
    floor_idx = np.sort(rng.choice(len(x_tr), size=min(n, len(x_tr)), replace=False))
    x_fl = x_tr[floor_idx]
    module = extractor.feature_module()
    f_g, f_te, f_fl = (M.extract(module, a) for a in (x_g, x_te, x_fl))
    tick("features")
    policy = M.resize_policy(int(extractor.meta["resolution"]))
    m: dict[str, Any] = {"conditional": conditional, "n_generated": n, "n_real_test": len(x_te),
                         "n_real_train": len(x_tr), "n_floor": len(x_fl), "real_reference": s.kind == "reference",
                         "model_uri": s.source, "source": s.kind}
    reasons, small = _sample_reasons(cfg, s, n, len(x_te), len(x_tr))
    kid = dict(kid_subset=cfg.kid_subset_size, kid_subsets=cfg.kid_subsets, seed=seed)
    for suffix, feats in (("", f_g), ("_floor", f_fl)):
        r = M.fid_kid(f_te, feats, **kid)
        m[f"fid_domain{suffix}"], m[f"kid_domain{suffix}_mean"], m[f"kid_domain{suffix}_std"] = r["fid"], r["kid_mean"], r["kid_std"]
        m[f"kid_subset_size{suffix}"] = r["kid_subset_size"]
        if min(len(f_te), len(feats)) > cfg.prdc_k:
            for name, v in M.prdc(f_te, feats, cfg.prdc_k).items():
                m[f"prdc_{name}{suffix}"] = v
    m["fid_domain_ratio_to_floor"] = m["fid_domain"] / max(m["fid_domain_floor"], 1e-9)
    if cfg.bootstrap:
        boot = M.bootstrap_fid(f_te, f_g, f_fl, cfg.bootstrap, seed + 3)
        for name, key in (("fid", "fid_domain"), ("floor", "fid_domain_floor"), ("ratio", "fid_domain_ratio_to_floor")):
            m[f"{key}_lo"], m[f"{key}_hi"] = (float(v) for v in np.percentile(boot[name], [5, 95]))
    tick("distribution")
    c2st_protocol: dict[str, Any] = {"enabled": False}
    if cfg.c2st:
        if cfg.c2st_max_images:
            import dataclasses

            from medsynth.c2st import C2STSettings

            c2st_settings = dataclasses.replace(c2st_settings or C2STSettings(), max_images=cfg.c2st_max_images)
        c2st_protocol = S.detectability(m, x_tr, y_tr, x_te, x_g, labels, data.classes, seed, c2st_settings)
    tick("c2st")
    nn_d, nn_i = M.nearest_neighbours(x_g, x_te)
    ssim, psnr = M.ssim_psnr(x_g, x_te[nn_i])
    fl_d, fl_i = M.nearest_neighbours(x_fl, x_te)
    ssim_f, psnr_f = M.ssim_psnr(x_fl, x_te[fl_i])
    m.update(nn_ssim_mean=float(ssim.mean()), nn_psnr_mean=float(psnr.mean()),
             nn_ssim_mean_floor=float(ssim_f.mean()), nn_psnr_mean_floor=float(psnr_f.mean()))
    dg = M.pair_similarity(x_g, cfg.diversity_pairs, seed)
    dr = M.pair_similarity(x_te, cfg.diversity_pairs, seed)
    m.update(diversity_ms_ssim_generated=dg["ms_ssim"], diversity_ms_ssim_real=dr["ms_ssim"],
             diversity_ssim_generated=dg["ssim"], diversity_ssim_real=dr["ssim"])
    tick("pixel_and_diversity")
    per_class_unstable: list[str] = []
    if conditional:
        S.per_class(m, cfg, extractor, data, x_g, labels, f_g, f_te, y_te, x_te, x_tr, y_tr, kid,
                    per_class_unstable, seed)
    tick("conditional")
    priv = M.privacy(x_g, x_tr, cfg.near_copy_ratio, cfg.privacy_max_train_queries, seed)
    m.update({f"privacy_{key}": v for key, v in priv.summary().items()})
    tick("privacy")
    ref = medmnist_reference(data.classes)
    notes: list[str] = list(s.notes)
    if cfg.utility and k >= 2 and (conditional or cfg.utility_pseudo_labels):
        S.utility(m, cfg, x_tr, y_tr, x_g, labels, x_te, y_te, k, seed)
        if not conditional:
            notes.append("utility: the unconditional set's images carry no labels; they were labelled by "
                         "classifier (a), trained on the real subset (pseudo-labels)")
    elif cfg.utility and k >= 2:
        notes.append("utility skipped: an unconditional set's images carry no labels "
                     "(evaluate.utility_pseudo_labels is off)")
    tick("utility")
    if cfg.inception_weights:
        from medsynth.metrics import standard_fid

        m["fid_standard"] = standard_fid(cfg.inception_weights, x_te, x_g)
        m["fid_standard_floor"] = standard_fid(cfg.inception_weights, x_te, x_fl)
    tick("standard_fid")
    m.update(unstable=bool(reasons), unstable_reasons=reasons, small_reference=bool(small),
             small_reference_reasons=small, per_class_unstable=per_class_unstable, utility_reference=ref,
             notes=notes, timing_s=timing)
    gate = gate or GatePolicy()
    # one class: "follows its label" cannot fail and the majority share is 1, so the conditional
    # floors do not apply (promote treats such a model as unconditional too)
    floors = floor_checks(gate, m, conditional and data.num_classes > 1)
    m["gate_floors_passed"] = all(c.passed for c in floors)
    m["gate_floors"] = floors_dict(floors)
    tick("floors")
    m["protocol"] = {
        "metric_names": "FID-domain / KID-domain: Frechet / kernel distance in the domain classifier's "
                        "feature space; NOT comparable with ImageNet-Inception FID",
        "backbone": extractor.backbone, "extractor_sha256": extractor.meta["sha256"],
        "extractor_test_accuracy": extractor.meta.get("test_accuracy"),
        "feature_dim": int(f_te.shape[1]), "resize_policy": policy,
        "model_uri": s.source, "source": s.kind, "source_sha256": s.sha256 or None,
        "reference_set": f"real test split ({len(x_te)} images)",
        "floor": f"real train sample of {len(x_fl)} images vs the real test split",
        "images": {"generated": n, "real_test": len(x_te), "real_train": len(x_tr)},
        "dataset_resolution": data.resolution, "classes": data.classes, "data_hash": data.data_hash,
        "kid": f"subset size {m['kid_subset_size']}, {cfg.kid_subsets} subsets",
        "bootstrap": (f"{cfg.bootstrap} paired resamples of the real test, compared and floor sets; "
                      "5th-95th percentiles") if cfg.bootstrap else "off",
        "c2st": c2st_protocol,
        "nn_distance": "RMS pixel difference on the [0,1] scale (PSNR = -20 log10 RMS)",
        "diversity": "MS-SSIM (kernel 5, 3 scales) and SSIM between random distinct pairs",
        "gate_policy": to_dict(gate),
        "seed": seed, "truncation": cfg.truncation, "config": to_dict(cfg),
    }
    details = {"label": s.label, "synthetic": s.kind != "reference", "x_g": x_g, "labels": labels, "x_tr": x_tr,
               "x_te": x_te, "nn_index": nn_i, "nn_dist": nn_d, "privacy": priv, "classes": data.classes,
               "grid": cfg.grid_images, "closest": cfg.closest_pairs}
    return m, details


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

    p = m["protocol"]
    params = {"evaluate": to_dict(cfg), "backbone": p["backbone"], "extractor_sha256": p["extractor_sha256"],
              "resize_policy": p["resize_policy"], "n_generated": m["n_generated"],
              "n_real_test": m["n_real_test"], "model_uri": model_uri or "none"}
    all_tags = {"medsynth.eval.backbone": p["backbone"], "medsynth.eval.metric_names": "FID-domain/KID-domain",
                "medsynth.eval.unstable": str(m["unstable"]).lower(), "medsynth.model_uri": model_uri or "none",
                "medsynth.eval.source": m["source"], "medsynth.eval.extractor_sha256": p["extractor_sha256"],
                "medsynth.eval.gate_floors_passed": str(m["gate_floors_passed"]).lower(), **tags}
    if p.get("source_sha256"):
        all_tags["medsynth.eval.source_sha256"] = p["source_sha256"]
    with step_run(project, "evaluate", params, data.data_hash, tags=all_tags) as run:
        nums = {key: float(v) for key, v in m.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)}
        nums.update({flag: float(m[flag]) for flag in ("unstable", "small_reference", "gate_floors_passed")})
        mlflow.log_metrics(nums)
        mlflow.log_artifacts(str(out), "evaluation")
        return run.info.run_id
