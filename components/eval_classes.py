"""The evaluation's stages that need class labels (components/evaluate.py :func:`score` runs them).

Same shape as components/eval_scores.py: a function of the ``EvalContext`` returning a small typed
result whose ``entries()`` are its metrics.json keys (medsynth/metric_keys.py), or None when the
stage does not apply.

1. :func:`per_class` -> :class:`PerClass` (conditional sets): the judge's accuracy on each
   requested label (:class:`Judge`), the majority-class share (what a judge that ignores the image
   would score), and per class FID-domain, coverage and diversity next to their real floors at the
   same count (:class:`ClassScores`), so the gate can let the worst class decide.
2. :func:`utility` -> :class:`Utility` (>= 2 classes): classifiers trained on (a) real, (b) real +
   synthetic, (c) synthetic only, (d) real duplicated to (b)'s count, tested on the real test split;
   an unconditional set is labelled by classifier (a) (pseudo-labels).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medsynth import metric_keys as K
from medsynth.components.eval_scores import EvalContext, Features, entries
from medsynth.imaging import coarse_view, to_res

# 1. conditional sets: the judge and per-class scores -----------------------------------------------

@dataclass(frozen=True)
class Judge:
    """Does each image follow its label among this dataset's classes, in the judge's eyes?"""

    description: str  # which judge, or why there is none
    accuracy: float | None = None
    by_class: dict[str, float] = field(default_factory=dict)  # class name -> accuracy on its images
    in_domain_share: float | None = None  # the judge's top class is one of this dataset's
    rejected_share: float | None = None  # rejected as out of domain (extractors with an in-domain score)

    def entries(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.in_domain_share is not None:
            out[K.COND_IN_DOMAIN_SHARE] = self.in_domain_share
        if self.rejected_share is not None:
            out[K.COND_REJECTED_SHARE] = self.rejected_share
        out[K.COND_JUDGE] = self.description
        if self.accuracy is not None:
            out[K.COND_ACCURACY] = self.accuracy
        out.update({K.cond_accuracy_of(name): v for name, v in self.by_class.items()})
        return out


@dataclass(frozen=True)
class ClassScores:
    """One class's images beside a real-train floor sample of the same count (None: too few for it)."""

    name: str
    fid: float
    fid_floor: float | None
    coverage: float | None
    coverage_floor: float | None
    diversity_generated: float  # pair MS-SSIM
    diversity_real: float
    coarse: dict[str, float] = field(default_factory=dict)  # the coarse view's keys (fid_domain_16px, ...)

    def entries(self) -> dict[str, Any]:
        values = ((K.FID_DOMAIN, self.fid), (K.FID_DOMAIN_FLOOR, self.fid_floor), (K.PRDC_COVERAGE, self.coverage),
                  (K.PRDC_COVERAGE_FLOOR, self.coverage_floor),
                  (K.DIVERSITY_MS_SSIM_GENERATED, self.diversity_generated),
                  (K.DIVERSITY_MS_SSIM_REAL, self.diversity_real), *self.coarse.items())
        return {K.per_class(key, self.name): v for key, v in values if v is not None}


@dataclass(frozen=True)
class PerClass:
    majority_share: float  # what a judge that ignores the image scores
    judge: Judge
    classes: list[ClassScores]  # classes with at least two compared and two real test images
    unstable: list[str]  # classes with fewer than ``min_samples`` images (metrics.json per_class_unstable)

    def entries(self) -> dict[str, Any]:
        return {K.COND_MAJORITY_SHARE: self.majority_share, **entries(self.judge, *self.classes)}


def per_class(ctx: EvalContext, f: Features) -> PerClass | None:
    """Conditional sets: judge accuracy per requested label and per-class quality beside its floor."""
    from medsynth import metrics as M

    labels, cfg = ctx.labels, ctx.cfg
    if labels is None:
        return None
    majority = float(np.bincount(labels, minlength=ctx.data.num_classes).max() / len(labels))
    judged = judge(ctx.extractor, ctx.classes, ctx.x_g, labels)
    rng = np.random.default_rng(ctx.seed + 4)
    module = ctx.extractor.feature_module()
    scores, unstable = [], []
    for c, name in enumerate(ctx.classes):
        sel = labels == c
        n_c, real = int(sel.sum()), f.test[ctx.y_te == c]
        if n_c < 2 or len(real) < 2:
            continue
        pool = np.flatnonzero(ctx.y_tr == c)
        fl_idx = np.sort(rng.choice(pool, size=min(n_c, len(pool)), replace=False)) if len(pool) >= 2 else None
        f_fl = M.extract(module, ctx.x_tr[fl_idx]) if fl_idx is not None else None
        fid = M.fid_kid(real, f.generated[sel], **ctx.kid)["fid"]
        fid_floor = M.fid_kid(real, f_fl, **ctx.kid)["fid"] if f_fl is not None else None
        coverage = coverage_floor = None
        if min(n_c, len(real)) > cfg.prdc_k:
            coverage = M.prdc(real, f.generated[sel], cfg.prdc_k)["coverage"]
            if f_fl is not None and len(f_fl) > cfg.prdc_k:
                coverage_floor = M.prdc(real, f_fl, cfg.prdc_k)["coverage"]
        div_g = M.pair_similarity(ctx.x_g[sel], cfg.diversity_pairs, ctx.seed)["ms_ssim"]
        div_r = M.pair_similarity(ctx.x_te[ctx.y_te == c], cfg.diversity_pairs, ctx.seed)["ms_ssim"]
        coarse = {}
        if f.coarse is not None:  # the gate's scale: FID-domain, recall and coverage of the coarse view
            real_c, gen_c = f.coarse.test[ctx.y_te == c], f.coarse.generated[sel]
            fl_c = M.extract(module, coarse_view(ctx.x_tr[fl_idx], K.GATE_PX)) if fl_idx is not None else None
            coarse[K.FID_DOMAIN_16PX] = M.fid_kid(real_c, gen_c, **ctx.kid)["fid"]
            if fl_c is not None:
                coarse[K.floor(K.FID_DOMAIN_16PX)] = M.fid_kid(real_c, fl_c, **ctx.kid)["fid"]
            if min(n_c, len(real)) > cfg.prdc_k:
                p = M.prdc(real_c, gen_c, cfg.prdc_k)
                coarse[K.PRDC_RECALL_16PX], coarse[K.PRDC_COVERAGE_16PX] = p["recall"], p["coverage"]
                if fl_c is not None and len(fl_c) > cfg.prdc_k:
                    pf = M.prdc(real_c, fl_c, cfg.prdc_k)
                    coarse[K.floor(K.PRDC_RECALL_16PX)] = pf["recall"]
                    coarse[K.floor(K.PRDC_COVERAGE_16PX)] = pf["coverage"]
        scores.append(ClassScores(name, fid, fid_floor, coverage, coverage_floor, div_g, div_r, coarse))
        if min(n_c, len(real)) < cfg.min_samples:
            unstable.append(f"class {name}: {n_c} compared / {len(real)} real test images")
    return PerClass(majority, judged, scores, unstable)


def out_of_domain(extractor: Any, x: np.ndarray) -> np.ndarray | None:
    """Images the extractor places out of its domain at full resolution (bool ``[N]``; reported).

    The extractor's in-domain score is the distance to the nearest class centre, calibrated so 99 %
    of real val images pass (``Extractor.judge``). Extractors without it (format 1) return None.
    """
    if not getattr(extractor, "has_in_domain", False):
        return None
    return ~np.asarray(extractor.judge(x)[1], dtype=bool)


def judge(extractor: Any, classes: list[str], x_g: np.ndarray, labels: np.ndarray) -> Judge:
    """The domain extractor as judge: does each image show the class it was generated for?

    The class is read through the coarse view at ``K.JUDGE_PX`` (32 px): what class an image shows is
    anatomy, and at full resolution the class head also reads grain (5 grey levels of noise on real
    PneumoniaMNIST moved its accuracy 0.82 -> 0.41; through the 32 px view 0.84 -> 0.83; real CT stays
    at 1.00). The out-of-domain reject (calibrated at full resolution, where 5 grey levels of noise
    already reject 6 % of real pneumonia images) is reported as ``cond_rejected_share``, not counted:
    noise and artefacts are refused by the coarse-scale floors (docs/BENCHMARKS.md).
    """
    from medsynth.training.classifier import predict_proba

    idx = [extractor.class_index(c) for c in classes]
    if any(i is None for i in idx):
        return Judge("none: the extractor does not know this dataset's classes")
    res = int(extractor.meta["resolution"])
    probs = predict_proba(extractor.model, to_res(coarse_view(x_g, K.JUDGE_PX), res))
    pred = probs[:, idx].argmax(1)  # restricted to this dataset's classes
    in_domain = float(np.isin(probs.argmax(1), idx).mean())
    reject = out_of_domain(extractor, x_g)
    rejected = None if reject is None else float(np.mean(reject))
    by_class = {name: float((pred[labels == c] == c).mean()) for c, name in enumerate(classes) if (labels == c).any()}
    return Judge(f"domain extractor {extractor.backbone} through the {K.JUDGE_PX} px view",
                 float((pred == labels).mean()), by_class, in_domain, rejected)


# 2. utility ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Utility:
    pseudo_labels: bool  # the synthetic images' labels came from classifier (a)
    scores: dict[str, tuple[float, float, int]]  # training set (metric_keys.UTILITY_TRAINING_SETS) -> (ACC, AUC, n)
    cas_ratio: float | None = None  # ACC(synthetic only) / ACC(as many real images); labelled sets only

    def entries(self) -> dict[str, Any]:
        out: dict[str, Any] = {K.UTILITY_PSEUDO_LABELS: float(self.pseudo_labels)}
        for name, (acc, auc, n) in self.scores.items():
            out[K.utility("acc", name)], out[K.utility("auc", name)], out[K.utility("n_train", name)] = acc, auc, n
        if self.cas_ratio is not None:
            out[K.UTILITY_CAS_RATIO] = self.cas_ratio
        return out


def utility_applies(ctx: EvalContext) -> bool:
    """>= 2 classes, and labels for the synthetic images (a conditional set, or pseudo-labels allowed)."""
    cfg = ctx.cfg
    return cfg.utility and ctx.data.num_classes >= 2 and (ctx.conditional or cfg.utility_pseudo_labels)


def utility(ctx: EvalContext) -> Utility | None:
    """(a) real, (b) real + synthetic, (c) synthetic only, (d) real duplicated to (b)'s count.

    An unconditional set: the synthetic images get classifier (a)'s predictions as labels
    (pseudo-labelling), recorded as ``utility_pseudo_labels`` = 1. None when it does not apply.
    """
    from medsynth.metrics import accuracy_auc
    from medsynth.training.classifier import TrainSettings, predict_proba, train_classifier

    if not utility_applies(ctx):
        return None
    cfg, x_tr, x_g, labels, k, seed = ctx.cfg, ctx.x_tr, ctx.x_g, ctx.labels, ctx.data.num_classes, ctx.seed
    rng = np.random.default_rng(seed + 2)
    ri = np.sort(rng.choice(len(x_tr), size=min(cfg.utility_max_train, len(x_tr)), replace=False))
    gi = np.sort(rng.choice(len(x_g), size=min(cfg.utility_max_train, len(x_g)), replace=False))
    settings = TrainSettings(epochs=cfg.utility_epochs, batch_size=128, lr=3e-3, feature_dim=64, width=16, seed=seed)
    xr, yr, xs = x_tr[ri], ctx.y_tr[ri], x_g[gi]
    trained = {}
    if labels is None:
        trained["real"], _ = train_classifier(xr, yr, k, settings)
        ys = predict_proba(trained["real"], xs).argmax(1).astype(np.int64)
    else:
        ys = labels[gi]
    dup = np.concatenate([np.arange(len(xr)), rng.choice(len(xr), size=len(xs), replace=True)])
    sets = {"real": (xr, yr), "real_plus_synth": (np.concatenate([xr, xs]), np.concatenate([yr, ys])),
            "synth_only": (xs, ys), "real_dup": (xr[dup], yr[dup])}
    scores = {}
    for name, (x, y) in sets.items():
        model = trained.get(name) or train_classifier(x, y, k, settings)[0]
        trained[name] = model
        acc, auc = accuracy_auc(predict_proba(model, ctx.x_te), ctx.y_te)
        scores[name] = (acc, auc, len(x))
    cas = None
    if labels is not None:  # classification accuracy score (Ravuri & Vinyals 2019), at equal counts
        real_acc = scores["real"][0]
        if len(xs) < len(xr):  # fewer synthetic images: the real classifier sees as many
            sub = np.sort(rng.choice(len(xr), size=len(xs), replace=False))
            model = train_classifier(xr[sub], yr[sub], k, settings)[0]
            real_acc = accuracy_auc(predict_proba(model, ctx.x_te), ctx.y_te)[0]
        cas = scores["synth_only"][0] / max(real_acc, 1e-9)
    return Utility(labels is None, scores, cas)


def utility_notes(ctx: EvalContext, result: Utility | None) -> list[str]:
    """What the report should say about pseudo-labels or a skipped utility test."""
    if result is not None and result.pseudo_labels:
        return ["utility: the unconditional set's images carry no labels; they were labelled by "
                "classifier (a), trained on the real subset (pseudo-labels)"]
    if result is None and ctx.cfg.utility and ctx.data.num_classes >= 2:
        return ["utility skipped: an unconditional set's images carry no labels "
                "(evaluate.utility_pseudo_labels is off)"]
    return []
