"""Evaluate a generator against the real test split: quality, diversity, privacy and utility.

1. Check the generator fits the dataset (resolution, classes), generate ``n_generated`` images
   (conditional models: labels in the training split's class proportions).
2. Extract features once per set with the domain extractor (components/features.py).
3. FID-domain / KID-domain / PRDC vs the real test split, beside the same scores of a real-train
   sample of the same size (the floor: what "as good as real" looks like).
4. SSIM / PSNR of each generated image to its nearest real test image (pixel RMS); MS-SSIM and
   SSIM between random generated pairs vs real pairs (diversity, mode collapse).
5. Conditional models: accuracy of a judge on images generated per requested label; per-class
   FID-domain.
6. Privacy: nearest-training-image distance of each generated image vs the training set's own
   nearest-neighbour distances; near-copy share; the closest pairs as an image.
7. Utility (>= 2 classes, conditional models): classifiers trained on (a) real, (b) real +
   synthetic, (c) synthetic only, (d) real duplicated to (b)'s count, tested on the real test split.
8. metrics.json + report.md + figures in ``out_dir``; params, metrics and artifacts in MLflow.

metrics.json contract (what the gate reads; the same flat keys are the MLflow metrics)::

    fid_domain, kid_domain_mean, kid_domain_std      generated vs real test (lower is better)
    fid_domain_floor, kid_domain_floor_mean          real-train sample vs real test (the floor)
    prdc_precision|recall|density|coverage[_floor]   Naeem et al. 2020, k = evaluate.prdc_k
    nn_ssim_mean, nn_psnr_mean[_floor]               to the nearest real test image
    diversity_ms_ssim_generated|_real, diversity_ssim_generated|_real   lower = more diverse
    cond_accuracy, cond_accuracy_<class>, cond_in_domain_share, fid_domain_class_<class>
                                                     conditional models only
    privacy_near_copy_share, privacy_n_near_copies, privacy_nn_median_ratio,
    privacy_share_below_train_p5, privacy_synth_nn_median, privacy_train_nn_median,
    privacy_near_copy_threshold
    utility_acc|auc_real, _real_plus_synth, _synth_only, _real_dup      when utility ran
    utility_pseudo_labels                            1: synthetic labels came from classifier (a)
    fid_standard                                     only with local Inception weights
    n_generated, n_real_test, n_real_train, n_floor, seconds, timing_s {stage: wall s}
    real_reference (bool)                            true: the "generator" returned real images
    unstable (bool), unstable_reasons (list[str])    true: a headline set had < min_samples images
    conditional (bool), protocol {backbone, extractor_sha256, resize_policy, image counts, ...},
    per_class_unstable, utility_reference (MedMNIST v2), notes
A key that does not apply is absent (never NaN), so a gate treats "absent" as "not measured".
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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

    def check(self) -> None:
        bounds = {"n_generated": (10, 10_000), "min_samples": (2, 100_000), "kid_subsets": (1, 1000),
                  "kid_subset_size": (2, 10_000), "prdc_k": (1, 100), "diversity_pairs": (2, 10_000),
                  "privacy_max_train_queries": (10, 50_000), "closest_pairs": (1, 256),
                  "utility_epochs": (1, 100), "utility_max_train": (10, 100_000), "grid_images": (1, 256)}
        for name, (lo, hi) in bounds.items():
            v = getattr(self, name)
            if not lo <= v <= hi:
                raise ConfigError(f"evaluate.{name}: must be in {lo}..{hi}, got {v}")
        if not 0 < self.truncation <= 1:
            raise ConfigError(f"evaluate.truncation: must be in (0, 1], got {self.truncation}")
        if not 0 <= self.near_copy_ratio < 1:
            raise ConfigError(f"evaluate.near_copy_ratio: must be in [0, 1), got {self.near_copy_ratio}")


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


def _key(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name).strip("_").lower()


def run(cfg: EvaluateConfig, project: ProjectConfig, generator: ImageGenerator,
        prepared_dir: str | os.PathLike, out_dir: str | os.PathLike, extractor: Any = None,
        track: bool = True, model_uri: str = "", tags: dict[str, str] | None = None) -> EvalResult:
    """Score ``generator`` against the real test split of ``prepared_dir``; write ``out_dir``.

    ``extractor``: a loaded components.features.Extractor (default: ``evaluate.extractor`` or
    ``<artifacts>/features/domain_cnn``, which must exist: run ``medsynth features``).

    Raises:
        InputError: the generator does not fit the dataset, bad output, no extractor, too few images.
    """
    from medsynth.components import eval_report
    from medsynth.components.features import load_extractor
    from medsynth.fileio import atomic_dir, write_json

    t0 = time.perf_counter()
    data = PreparedData.load(prepared_dir)
    conditional = check_generator(generator, data)
    if extractor is None:
        root = Path(cfg.extractor) if cfg.extractor else project.artifacts_path() / "features" / "domain_cnn"
        extractor = load_extractor(root)
    m, details = compute(cfg, generator, data, extractor, conditional, seed=project.seed)
    m["seconds"] = time.perf_counter() - t0
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        eval_report.write(tmp, m, details)
        write_json(tmp / "metrics.json", m)
    run_id = None
    if track:
        run_id = _track(project, cfg, m, out, data, model_uri, tags or {})
    return EvalResult(out, m, m["seconds"], run_id)


def compute(cfg: EvaluateConfig, gen: ImageGenerator, data: PreparedData, extractor: Any,
            conditional: bool, seed: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
    """All scores as (flat metrics.json dict, arrays for the figures)."""
    from medsynth import metrics as M
    from medsynth.progress import progress

    steps = iter(progress(range(9), desc="evaluate", unit="step"))
    timing: dict[str, float] = {}
    clock = [time.perf_counter()]

    def tick(stage: str) -> None:  # a progress tick and the stage's wall time
        now = time.perf_counter()
        timing[stage] = round(now - clock[0], 3)
        clock[0] = now
        next(steps, None)

    x_tr, y_tr = data.split("train")
    x_te, y_te = data.split("test")
    k, n = data.num_classes, cfg.n_generated
    if len(x_te) < 2 or len(x_tr) < 2:
        raise InputError(f"{data.root}: the train and test splits need at least two images each")
    labels = proportional_labels(y_tr, k, n, seed) if conditional else None
    x_g = generate_checked(gen, n, seed, labels, cfg.truncation, data.resolution)
    tick("generate")
    rng = np.random.default_rng(seed + 1)
    floor_idx = np.sort(rng.choice(len(x_tr), size=min(n, len(x_tr)), replace=False))
    x_fl = x_tr[floor_idx]
    module = extractor.feature_module()
    f_g, f_te, f_fl = (M.extract(module, a) for a in (x_g, x_te, x_fl))
    tick("features")
    policy = M.resize_policy(int(extractor.meta["resolution"]))
    reference = isinstance(gen, HeldOutReal)  # real images standing in for a generator
    m: dict[str, Any] = {"conditional": conditional, "n_generated": n, "n_real_test": len(x_te),
                         "n_real_train": len(x_tr), "n_floor": len(x_fl), "real_reference": reference}
    reasons = [f"{name}: {cnt} images < evaluate.min_samples={cfg.min_samples}"
               for name, cnt in (("generated", n), ("real test", len(x_te)), ("floor sample", len(x_fl)))
               if cnt < cfg.min_samples]
    kid = dict(kid_subset=cfg.kid_subset_size, kid_subsets=cfg.kid_subsets, seed=seed)
    for suffix, feats in (("", f_g), ("_floor", f_fl)):
        s = M.fid_kid(f_te, feats, **kid)
        m[f"fid_domain{suffix}"], m[f"kid_domain{suffix}_mean"], m[f"kid_domain{suffix}_std"] = s["fid"], s["kid_mean"], s["kid_std"]
        m[f"kid_subset_size{suffix}"] = s["kid_subset_size"]
        if min(len(f_te), len(feats)) > cfg.prdc_k:
            for name, v in M.prdc(f_te, feats, cfg.prdc_k).items():
                m[f"prdc_{name}{suffix}"] = v
    m["fid_domain_ratio_to_floor"] = m["fid_domain"] / max(m["fid_domain_floor"], 1e-9)
    tick("distribution")
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
        _conditional(m, extractor, data, x_g, labels, f_g, f_te, y_te, cfg, kid, per_class_unstable)
    tick("conditional")
    priv = M.privacy(x_g, x_tr, cfg.near_copy_ratio, cfg.privacy_max_train_queries, seed)
    m.update({f"privacy_{key}": v for key, v in priv.summary().items()})
    tick("privacy")
    ref = medmnist_reference(data.classes)
    notes: list[str] = []
    if cfg.utility and k >= 2 and (conditional or cfg.utility_pseudo_labels):
        _utility(m, cfg, x_tr, y_tr, x_g, labels, x_te, y_te, k, seed)
        if not conditional:
            notes.append("utility: the unconditional generator's images carry no labels; they were labelled by "
                         "classifier (a), trained on the real subset (pseudo-labels)")
    elif cfg.utility and k >= 2:
        notes.append("utility skipped: an unconditional generator's images carry no labels "
                     "(evaluate.utility_pseudo_labels is off)")
    tick("utility")
    if cfg.inception_weights:
        from medsynth.metrics import standard_fid

        m["fid_standard"] = standard_fid(cfg.inception_weights, x_te, x_g)
        m["fid_standard_floor"] = standard_fid(cfg.inception_weights, x_te, x_fl)
    tick("standard_fid")
    m.update(unstable=bool(reasons), unstable_reasons=reasons, per_class_unstable=per_class_unstable,
             utility_reference=ref, notes=notes, timing_s=timing)
    m["protocol"] = {
        "metric_names": "FID-domain / KID-domain: Frechet / kernel distance in the domain classifier's "
                        "feature space; NOT comparable with ImageNet-Inception FID",
        "backbone": extractor.backbone, "extractor_sha256": extractor.meta["sha256"],
        "extractor_test_accuracy": extractor.meta.get("test_accuracy"),
        "feature_dim": int(extractor.model.feature_dim), "resize_policy": policy,
        "reference_set": f"real test split ({len(x_te)} images)",
        "floor": f"real train sample of {len(x_fl)} images vs the real test split",
        "images": {"generated": n, "real_test": len(x_te), "real_train": len(x_tr)},
        "dataset_resolution": data.resolution, "classes": data.classes, "data_hash": data.data_hash,
        "kid": f"subset size {m['kid_subset_size']}, {cfg.kid_subsets} subsets",
        "nn_distance": "RMS pixel difference on the [0,1] scale (PSNR = -20 log10 RMS)",
        "diversity": "MS-SSIM (kernel 5, 3 scales) and SSIM between random distinct pairs",
        "seed": seed, "truncation": cfg.truncation, "config": to_dict(cfg),
    }
    details = {"label": f"REAL {gen.split} images (reference)" if reference else "SYNTHETIC", "x_g": x_g, "labels": labels, "x_tr": x_tr, "x_te": x_te, "nn_index": nn_i, "nn_dist": nn_d,
               "privacy": priv, "classes": data.classes, "grid": cfg.grid_images, "closest": cfg.closest_pairs}
    return m, details


def _conditional(m, extractor, data, x_g, labels, f_g, f_te, y_te, cfg, kid, unstable) -> None:
    """Judge accuracy per requested label and per-class FID-domain."""
    from medsynth import metrics as M
    from medsynth.training.classifier import predict_proba

    idx = [extractor.class_index(c) for c in data.classes]
    if all(i is not None for i in idx):
        probs = predict_proba(extractor.model, _to_res(x_g, int(extractor.meta["resolution"])))
        # restricted to this dataset's classes: does the image follow its label among them?
        pred = probs[:, idx].argmax(1)
        m["cond_in_domain_share"] = float(np.isin(probs.argmax(1), idx).mean())
        m["cond_judge"] = f"domain extractor {extractor.backbone}"
    else:
        m["cond_judge"] = "none: the extractor does not know this dataset's classes"
        return
    m["cond_accuracy"] = float((pred == labels).mean())
    for c, name in enumerate(data.classes):
        sel = labels == c
        if sel.any():
            m[f"cond_accuracy_{_key(name)}"] = float((pred[sel] == c).mean())
        real = f_te[y_te == c]
        if sel.sum() >= 2 and len(real) >= 2:
            m[f"fid_domain_class_{_key(name)}"] = M.fid_kid(real, f_g[sel], **kid)["fid"]
            if min(sel.sum(), len(real)) < cfg.min_samples:
                unstable.append(f"fid_domain_class_{_key(name)}: {int(sel.sum())} generated / {len(real)} real")


def _to_res(x: np.ndarray, r: int) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    if x.shape[-1] == r:
        return x
    t = F.interpolate(torch.from_numpy(x), size=(r, r), mode="bilinear", align_corners=False,
                      antialias=x.shape[-1] > r)
    return t.clamp(-1, 1).numpy()


def _utility(m, cfg, x_tr, y_tr, x_g, labels, x_te, y_te, k, seed) -> None:
    """(a) real, (b) real + synthetic, (c) synthetic only, (d) real duplicated to (b)'s count.

    ``labels`` None (an unconditional generator): the synthetic images get classifier (a)'s
    predictions as labels (pseudo-labelling); ``utility_pseudo_labels`` = 1 records it.
    """
    from medsynth.training.classifier import (
        TrainSettings,
        accuracy_auc,
        predict_proba,
        train_classifier,
    )

    rng = np.random.default_rng(seed + 2)
    ri = np.sort(rng.choice(len(x_tr), size=min(cfg.utility_max_train, len(x_tr)), replace=False))
    gi = np.sort(rng.choice(len(x_g), size=min(cfg.utility_max_train, len(x_g)), replace=False))
    settings = TrainSettings(epochs=cfg.utility_epochs, batch_size=128, lr=3e-3, feature_dim=64, width=16, seed=seed)
    xr, yr, xs = x_tr[ri], y_tr[ri], x_g[gi]
    trained = {}
    if labels is None:
        trained["real"], _ = train_classifier(xr, yr, k, settings)
        ys = predict_proba(trained["real"], xs).argmax(1).astype(np.int64)
    else:
        ys = labels[gi]
    m["utility_pseudo_labels"] = float(labels is None)
    dup = np.concatenate([np.arange(len(xr)), rng.choice(len(xr), size=len(xs), replace=True)])
    sets = {"real": (xr, yr), "real_plus_synth": (np.concatenate([xr, xs]), np.concatenate([yr, ys])),
            "synth_only": (xs, ys), "real_dup": (xr[dup], yr[dup])}
    for name, (x, y) in sets.items():
        model = trained.get(name) or train_classifier(x, y, k, settings)[0]
        acc, auc = accuracy_auc(predict_proba(model, x_te), y_te)
        m[f"utility_acc_{name}"], m[f"utility_auc_{name}"] = acc, auc
        m[f"utility_n_train_{name}"] = len(x)


def _track(project, cfg, m, out: Path, data: PreparedData, model_uri: str, tags: dict[str, str]) -> str:
    import mlflow

    from medsynth.tracking import step_run

    p = m["protocol"]
    params = {"evaluate": to_dict(cfg), "backbone": p["backbone"], "extractor_sha256": p["extractor_sha256"],
              "resize_policy": p["resize_policy"], "n_generated": m["n_generated"],
              "n_real_test": m["n_real_test"], "model_uri": model_uri or "none"}
    all_tags = {"medsynth.eval.backbone": p["backbone"], "medsynth.eval.metric_names": "FID-domain/KID-domain",
                "medsynth.eval.unstable": str(m["unstable"]).lower(), "medsynth.model_uri": model_uri or "none",
                **tags}
    with step_run(project, "evaluate", params, data.data_hash, tags=all_tags) as run:
        nums = {key: float(v) for key, v in m.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)}
        nums["unstable"] = float(m["unstable"])
        mlflow.log_metrics(nums)
        mlflow.log_artifacts(str(out), "evaluation")
        return run.info.run_id
