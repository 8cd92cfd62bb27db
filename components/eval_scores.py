"""The evaluation's stages on the whole set (components/evaluate.py :func:`score` runs them in turn).

Each stage is a function of one :class:`EvalContext` (the compared set, the real splits, the
extractor, the config and the seed) that returns a small typed result; the result's ``entries()``
are its metrics.json keys (names in medsynth/metric_keys.py), in the order they are written.
A stage that does not apply returns None and writes nothing (:func:`entries` skips it).

1. :func:`features`: domain-extractor features of the compared set, the real test split and the
   real-train floor sample, once.
2. :func:`distribution` -> :class:`Distribution`: FID-domain / KID-domain / PRDC of the compared set
   and of the floor sample against the real test split; paired bootstrap intervals.
3. :func:`detectability` -> :class:`Detectability`: C2ST (Lopez-Paz & Oquab 2017, medsynth/c2st.py),
   a CNN trained to tell the real train split from the compared set, ROC AUC on held-out halves,
   with its real-vs-real control (train split vs real test split at the same count) and, for
   conditional sets, per class.
4. :func:`pixel_and_diversity` -> :class:`PixelAndDiversity`: SSIM / PSNR to the nearest real test
   image; MS-SSIM and SSIM between random pairs, compared set vs real (mode collapse, noise).
5. :func:`privacy` -> :class:`Privacy`: nearest-training-image distances vs the training set's own.
6. :func:`standard_fid` -> :class:`StandardFid`: ImageNet-Inception FID, only with local weights.

The stages that need class labels (the judge and per-class scores, utility) live in
components/eval_classes.py. A new stage: a function in the module it belongs to, returning a
dataclass with ``entries()``; its keys in medsynth/metric_keys.py; one line in ``evaluate.score``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from medsynth import metric_keys as K
from medsynth.errors import InputError

if TYPE_CHECKING:
    from medsynth.c2st import C2STResult, C2STSettings
    from medsynth.components.evaluate import EvaluateConfig, ImageSet
    from medsynth.metrics import Privacy as PrivacyResult
    from medsynth.prepared import PreparedData


@dataclass(frozen=True, eq=False)
class EvalContext:
    """What every stage reads: the compared set, the real splits and floor sample, extractor, config, seed."""

    cfg: EvaluateConfig
    data: PreparedData
    extractor: Any  # a loaded medsynth.training.extractor.Extractor
    seed: int
    x_g: np.ndarray  # the compared images, float32 [N, 1, R, R] in [-1, 1]
    labels: np.ndarray | None  # their requested class indices (a conditional set), else None
    x_tr: np.ndarray  # the real train split and its labels
    y_tr: np.ndarray
    x_te: np.ndarray  # the real test split (the reference every score is measured against)
    y_te: np.ndarray
    x_fl: np.ndarray  # the floor: a real-train sample of the compared set's size

    @classmethod
    def of(cls, cfg: EvaluateConfig, s: ImageSet, data: PreparedData, extractor: Any, seed: int) -> EvalContext:
        """The context of image set ``s`` on ``data``; the floor sample is drawn with ``seed + 1``.

        Raises:
            InputError: fewer than two images in the set, the train or the test split.
        """
        x_tr, y_tr = data.sample("train", cfg.max_real_images, seed)
        x_te, y_te = data.sample("test", cfg.max_real_images, seed)
        n = len(s.images)
        if len(x_te) < 2 or len(x_tr) < 2:
            raise InputError(f"{data.root}: the train and test splits need at least two images each")
        if n < 2:
            raise InputError(f"{s.source}: {n} image(s); at least 2 are needed (and {cfg.min_samples} for stable scores)")
        rng = np.random.default_rng(seed + 1)
        floor_idx = np.sort(rng.choice(len(x_tr), size=min(n, len(x_tr)), replace=False))
        return cls(cfg, data, extractor, seed, s.images, s.labels, x_tr, y_tr, x_te, y_te, x_tr[floor_idx])

    @property
    def conditional(self) -> bool:
        return self.labels is not None

    @property
    def classes(self) -> list[str]:
        return self.data.classes

    @property
    def kid(self) -> dict[str, int]:
        """``medsynth.metrics.fid_kid``'s KID settings."""
        return dict(kid_subset=self.cfg.kid_subset_size, kid_subsets=self.cfg.kid_subsets, seed=self.seed)


def entries(*results: Any) -> dict[str, Any]:
    """The metrics.json entries of stage results in order (None: a stage that did not apply)."""
    out: dict[str, Any] = {}
    for r in results:
        if r is not None:
            out.update(r.entries())
    return out


# 1. features ---------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Features:
    """Domain-extractor features ``[N, D]`` of each set, at full resolution and through the coarse view."""

    generated: np.ndarray
    test: np.ndarray
    floor: np.ndarray
    coarse: Features | None = None  # the same sets seen through medsynth.imaging.coarse_view(K.GATE_PX)


def features(ctx: EvalContext) -> Features:
    from medsynth import metrics as M
    from medsynth.imaging import coarse_view

    module = ctx.extractor.feature_module()
    sets = (ctx.x_g, ctx.x_te, ctx.x_fl)
    coarse = Features(*(M.extract(module, coarse_view(a, K.GATE_PX)) for a in sets))
    return Features(*(M.extract(module, a) for a in sets), coarse=coarse)


# 2. distribution -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class SetScores:
    """FID-domain, KID-domain and PRDC of one set against the real test split."""

    fid: float
    kid_mean: float
    kid_std: float
    kid_subset_size: int
    prdc: dict[str, float]  # precision, recall, density, coverage (empty: too few images for k)

    def entries(self, floor: bool = False) -> dict[str, Any]:
        keys = ((K.FID_DOMAIN_FLOOR, K.KID_DOMAIN_FLOOR_MEAN, K.KID_DOMAIN_FLOOR_STD, K.floor(K.KID_SUBSET_SIZE))
                if floor else (K.FID_DOMAIN, K.KID_DOMAIN_MEAN, K.KID_DOMAIN_STD, K.KID_SUBSET_SIZE))
        out = dict(zip(keys, (self.fid, self.kid_mean, self.kid_std, self.kid_subset_size), strict=True))
        out.update({K.floor(K.prdc(name)) if floor else K.prdc(name): v for name, v in self.prdc.items()})
        return out


@dataclass(frozen=True)
class Distribution:
    compared: SetScores
    floor: SetScores
    intervals: dict[str, tuple[float, float]]  # key -> bootstrap (5th, 95th) percentiles (empty: bootstrap 0)
    coarse: Distribution | None = None  # the same through the coarse view (keys suffixed _16px)

    @property
    def ratio_to_floor(self) -> float:
        return self.compared.fid / max(self.floor.fid, 1e-9)

    def entries(self) -> dict[str, Any]:
        out = {**self.compared.entries(), **self.floor.entries(floor=True),
               K.FID_DOMAIN_RATIO_TO_FLOOR: self.ratio_to_floor}
        for key, (a, b) in self.intervals.items():
            out[K.lo(key)], out[K.hi(key)] = a, b
        if self.coarse is not None:
            out.update(coarse_entries(self.coarse.entries()))
        return out


def coarse_entries(entries: dict[str, Any]) -> dict[str, Any]:
    """The distribution keys of the coarse view: FID-domain (ratio, interval) and PRDC, suffixed ``_16px``."""
    bases = (K.FID_DOMAIN, *(K.prdc(n) for n in ("precision", "recall", "density", "coverage")))
    out = {}
    for key, v in entries.items():
        for base in bases:
            if key == base or key.startswith(base + "_"):
                out[K.at_px(base, K.GATE_PX) + key[len(base):]] = v
    return out


def distribution(ctx: EvalContext, f: Features) -> Distribution:
    """FID-domain / KID-domain / PRDC against the real test split, full resolution and coarse view."""
    from medsynth import metrics as M

    cfg = ctx.cfg

    def scores(feats: np.ndarray) -> SetScores:
        r = M.fid_kid(f.test, feats, **ctx.kid)
        prdc = M.prdc(f.test, feats, cfg.prdc_k) if min(len(f.test), len(feats)) > cfg.prdc_k else {}
        return SetScores(r["fid"], r["kid_mean"], r["kid_std"], r["kid_subset_size"], prdc)

    compared, floor = scores(f.generated), scores(f.floor)
    intervals: dict[str, tuple[float, float]] = {}
    if cfg.bootstrap:
        boot = M.bootstrap_fid(f.test, f.generated, f.floor, cfg.bootstrap, ctx.seed + 3)
        for name, key in (("fid", K.FID_DOMAIN), ("floor", K.FID_DOMAIN_FLOOR), ("ratio", K.FID_DOMAIN_RATIO_TO_FLOOR)):
            a, b = (float(v) for v in np.percentile(boot[name], [5, 95]))
            intervals[key] = (a, b)
    coarse = distribution(ctx, f.coarse) if f.coarse is not None else None
    return Distribution(compared, floor, intervals, coarse)


# 3. detectability (C2ST) ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Detectability:
    """C2ST at full resolution (``K.C2ST_AUC`` ...) and at each coarse scale (``K.at_px(K.C2ST_AUC, px)`` ...)."""

    compared: C2STResult  # real train split vs the compared set
    control: C2STResult  # real train split vs a real test sample of the compared set's size
    per_class: dict[str, C2STResult]  # class name -> within-class C2ST (conditional sets)
    settings: C2STSettings
    coarse: dict[int, Detectability] = dataclasses.field(default_factory=dict)  # px -> the same at that scale

    def entries(self, px: int | None = None) -> dict[str, Any]:
        def key(k: str) -> str:
            return k if px is None else K.at_px(k, px)

        c, ctl = self.compared, self.control
        seconds = c.seconds + ctl.seconds
        out: dict[str, Any] = {key(K.C2ST_AUC): c.auc, K.lo(key(K.C2ST_AUC)): c.auc_lo,
                               K.hi(key(K.C2ST_AUC)): c.auc_hi, K.floor(key(K.C2ST_AUC)): ctl.auc,
                               K.lo(K.floor(key(K.C2ST_AUC))): ctl.auc_lo, K.hi(K.floor(key(K.C2ST_AUC))): ctl.auc_hi}
        if px is None:
            out.update({K.C2ST_N_REAL: c.n_real, K.C2ST_N_SYNTH: c.n_synth, K.C2ST_N_FLOOR: ctl.n_real})
        for name, r in self.per_class.items():
            for k, v in ((key(K.C2ST_AUC), r.auc), (K.lo(key(K.C2ST_AUC)), r.auc_lo), (K.hi(key(K.C2ST_AUC)), r.auc_hi)):
                out[K.per_class(k, name)] = v
            seconds += r.seconds
        for scale, d in self.coarse.items():
            sub = d.entries(scale)
            seconds += sub.pop(K.C2ST_SECONDS)
            out.update(sub)
        out[K.C2ST_SECONDS] = seconds
        return out

    def protocol(self, by_class: bool) -> dict[str, Any]:
        """metrics.json ``protocol.c2st``."""
        return {**self.settings.to_dict(), "real": "real train split", "control": "real train split vs a real test "
                "sample of the compared set's size", "per_class": by_class,
                "interval": "bootstrap 95% of the held-out predictions (auc_lo, auc_hi)",
                "coarse_scales": {f"{px}px": d.settings.to_dict() for px, d in self.coarse.items()}}


def detectability(ctx: EvalContext, settings: C2STSettings | None = None) -> Detectability | None:
    """C2ST AUC of the compared set, its real-vs-real control and (conditional) per class, at full
    resolution and at each coarse scale (``K.COARSE_PX``); None when off."""
    from medsynth.c2st import C2STSettings

    cfg = ctx.cfg
    if not cfg.c2st:
        return None
    s = settings or C2STSettings()
    if cfg.c2st_max_images:
        s = dataclasses.replace(s, max_images=cfg.c2st_max_images)
    full = _detect(ctx, s)
    coarse = {px: _detect(ctx, s.coarse(px)) for px in K.COARSE_PX}
    return dataclasses.replace(full, coarse=coarse)


def _detect(ctx: EvalContext, s: C2STSettings) -> Detectability:
    from medsynth.c2st import c2st, c2st_floor, c2st_per_class

    res = c2st(ctx.x_tr, ctx.x_g, seed=ctx.seed, settings=s)
    # the control at the same count: a train sample against a real test sample of the compared set's size
    rng = np.random.default_rng(ctx.seed + 5)
    te = ctx.x_te[np.sort(rng.choice(len(ctx.x_te), size=min(len(ctx.x_te), len(ctx.x_g)), replace=False))]
    ctl = c2st_floor(ctx.x_tr, te, seed=ctx.seed, settings=s)
    by_class = {}
    if per_class_c2st(ctx):
        by_class = {ctx.classes[c]: r for c, r in
                    c2st_per_class(ctx.x_tr, ctx.y_tr, ctx.x_g, ctx.labels, seed=ctx.seed, settings=s).items()}
    return Detectability(res, ctl, by_class, s)


def per_class_c2st(ctx: EvalContext) -> bool:
    """Whether the C2ST runs per class too (a conditional set of a dataset with several classes)."""
    return ctx.labels is not None and len(ctx.classes) > 1


# 4. pixel similarity and diversity -----------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class PixelAndDiversity:
    nn_ssim: float  # mean SSIM / PSNR of each compared image to its nearest real test image
    nn_psnr: float
    nn_ssim_floor: float  # the same of the floor sample
    nn_psnr_floor: float
    generated: dict[str, float]  # pair similarity ``{ms_ssim, ssim, pairs}`` of the compared set
    real: dict[str, float]  # ... of the real test split
    nn_index: np.ndarray  # [N] each compared image's nearest real test image (the report's figure)
    nn_dist: np.ndarray  # [N] its RMS distance

    def entries(self) -> dict[str, Any]:
        return {K.NN_SSIM_MEAN: self.nn_ssim, K.NN_PSNR_MEAN: self.nn_psnr, K.NN_SSIM_MEAN_FLOOR: self.nn_ssim_floor,
                K.NN_PSNR_MEAN_FLOOR: self.nn_psnr_floor, K.DIVERSITY_MS_SSIM_GENERATED: self.generated["ms_ssim"],
                K.DIVERSITY_MS_SSIM_REAL: self.real["ms_ssim"], K.DIVERSITY_SSIM_GENERATED: self.generated["ssim"],
                K.DIVERSITY_SSIM_REAL: self.real["ssim"]}


def pixel_and_diversity(ctx: EvalContext) -> PixelAndDiversity:
    from medsynth import metrics as M

    nn_d, nn_i = M.nearest_neighbours(ctx.x_g, ctx.x_te)
    ssim, psnr = M.ssim_psnr(ctx.x_g, ctx.x_te[nn_i])
    _, fl_i = M.nearest_neighbours(ctx.x_fl, ctx.x_te)
    ssim_f, psnr_f = M.ssim_psnr(ctx.x_fl, ctx.x_te[fl_i])
    dg = M.pair_similarity(ctx.x_g, ctx.cfg.diversity_pairs, ctx.seed)
    dr = M.pair_similarity(ctx.x_te, ctx.cfg.diversity_pairs, ctx.seed)
    return PixelAndDiversity(float(ssim.mean()), float(psnr.mean()), float(ssim_f.mean()), float(psnr_f.mean()),
                             dg, dr, nn_i, nn_d)


# 5. privacy ----------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Privacy:
    result: PrivacyResult  # distances and closest pairs (the report's privacy figure)

    def entries(self) -> dict[str, Any]:
        return {K.privacy(name): v for name, v in self.result.summary().items()}


def privacy(ctx: EvalContext) -> Privacy:
    from medsynth import metrics as M

    cfg = ctx.cfg
    return Privacy(M.privacy(ctx.x_g, ctx.x_tr, cfg.near_copy_ratio, cfg.privacy_max_train_queries, ctx.seed))


# 6. ImageNet-Inception FID -------------------------------------------------------------------------

@dataclass(frozen=True)
class StandardFid:
    fid: float
    floor: float

    def entries(self) -> dict[str, Any]:
        return {K.FID_STANDARD: self.fid, K.FID_STANDARD_FLOOR: self.floor}


def standard_fid(ctx: EvalContext) -> StandardFid | None:
    """Only with local Inception weights (``evaluate.inception_weights``); None otherwise."""
    weights = ctx.cfg.inception_weights
    if not weights:
        return None
    from medsynth.metrics import standard_fid as fid

    return StandardFid(fid(weights, ctx.x_te, ctx.x_g), fid(weights, ctx.x_te, ctx.x_fl))
