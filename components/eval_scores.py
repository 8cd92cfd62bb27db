"""The parts of the evaluation beyond the whole-set distribution scores (see components/evaluate.py):

1. **Detectability** (C2ST, Lopez-Paz & Oquab 2017, medsynth/c2st.py): a CNN trained to tell the
   real train split from the compared set, scored by ROC AUC on held-out halves, with its
   real-vs-real control (train split vs real test split at the same count) and, for conditional
   sets, per class.
2. **Per class** (conditional sets): the judge's accuracy on each requested label, the majority-class
   share (what a judge that ignores the image would score), and per class FID-domain, coverage and
   diversity next to their real floors at the same count, so the gate can let the worst class decide.
3. **Utility**: classifiers trained on (a) real, (b) real + synthetic, (c) synthetic only, (d) real
   duplicated to (b)'s count, tested on the real test split.

Every function adds flat keys to the metrics dict ``m`` (names in evaluate.py's contract).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medsynth.imaging import to_res


def key(name: str) -> str:
    """A class name as part of a metrics key (``CT/HeadCT`` -> ``ct_headct``)."""
    return "".join(ch if ch.isalnum() else "_" for ch in name).strip("_").lower()


def detectability(m: dict[str, Any], x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, x_g: np.ndarray,
                  labels: np.ndarray | None, classes: list[str], seed: int, settings: Any = None) -> dict[str, Any]:
    """C2ST AUC of the compared set and of the real-vs-real control. Returns the protocol entry."""
    from medsynth.c2st import C2STSettings, c2st, c2st_floor, c2st_per_class

    s = settings or C2STSettings()
    res = c2st(x_tr, x_g, seed=seed, settings=s)
    m.update(c2st_auc=res.auc, c2st_auc_lo=res.auc_lo, c2st_auc_hi=res.auc_hi, c2st_n_real=res.n_real,
             c2st_n_synth=res.n_synth, c2st_seconds=res.seconds)
    # the control at the same count: a train sample against a real test sample of the compared set's size
    rng = np.random.default_rng(seed + 5)
    te = x_te[np.sort(rng.choice(len(x_te), size=min(len(x_te), len(x_g)), replace=False))]
    ctl = c2st_floor(x_tr, te, seed=seed, settings=s)
    m.update(c2st_auc_floor=ctl.auc, c2st_auc_floor_lo=ctl.auc_lo, c2st_auc_floor_hi=ctl.auc_hi,
             c2st_n_floor=ctl.n_real, c2st_seconds=res.seconds + ctl.seconds)
    if labels is not None and len(classes) > 1:
        for c, r in c2st_per_class(x_tr, y_tr, x_g, labels, seed=seed, settings=s).items():
            k = key(classes[c])
            m[f"c2st_auc_class_{k}"], m[f"c2st_auc_lo_class_{k}"], m[f"c2st_auc_hi_class_{k}"] = r.auc, r.auc_lo, r.auc_hi
            m["c2st_seconds"] += r.seconds
    return {**s.to_dict(), "real": "real train split", "control": "real train split vs a real test sample of the "
            "compared set's size", "per_class": labels is not None and len(classes) > 1,
            "interval": "bootstrap 95% of the held-out predictions (auc_lo, auc_hi)"}


def out_of_domain(extractor: Any, x: np.ndarray) -> np.ndarray | None:
    """Images the judge rejects as out of domain (bool ``[N]``), counted as not following their label.

    The extractor's in-domain score is the distance to the nearest class centre, calibrated so 99 %
    of real val images pass (``Extractor.judge``): noise cannot score a confident class. Extractors
    without it (format 1) return None: nothing is rejected, only the in-domain share is reported.
    """
    if not getattr(extractor, "has_in_domain", False):
        return None
    return ~np.asarray(extractor.judge(x)[1], dtype=bool)


def per_class(m: dict[str, Any], cfg: Any, extractor: Any, data: Any, x_g: np.ndarray, labels: np.ndarray,
              f_g: np.ndarray, f_te: np.ndarray, y_te: np.ndarray, x_te: np.ndarray, x_tr: np.ndarray,
              y_tr: np.ndarray, kid: dict[str, Any], unstable: list[str], seed: int) -> None:
    """Conditional sets: judge accuracy per requested label and per-class quality beside its floor."""
    from medsynth import metrics as M

    k = data.num_classes
    m["cond_majority_share"] = float(np.bincount(labels, minlength=k).max() / len(labels))
    _judge(m, extractor, data.classes, x_g, labels)
    rng = np.random.default_rng(seed + 4)
    module = extractor.feature_module()
    for c, name in enumerate(data.classes):
        sel, kk = labels == c, key(name)
        n_c, real = int(sel.sum()), f_te[y_te == c]
        if n_c < 2 or len(real) < 2:
            continue
        pool = np.flatnonzero(y_tr == c)
        fl_idx = np.sort(rng.choice(pool, size=min(n_c, len(pool)), replace=False)) if len(pool) >= 2 else None
        f_fl = M.extract(module, x_tr[fl_idx]) if fl_idx is not None else None
        m[f"fid_domain_class_{kk}"] = M.fid_kid(real, f_g[sel], **kid)["fid"]
        if f_fl is not None:
            m[f"fid_domain_floor_class_{kk}"] = M.fid_kid(real, f_fl, **kid)["fid"]
        if min(n_c, len(real)) > cfg.prdc_k:
            m[f"prdc_coverage_class_{kk}"] = M.prdc(real, f_g[sel], cfg.prdc_k)["coverage"]
            if f_fl is not None and len(f_fl) > cfg.prdc_k:
                m[f"prdc_coverage_floor_class_{kk}"] = M.prdc(real, f_fl, cfg.prdc_k)["coverage"]
        real_x = x_te[y_te == c]
        m[f"diversity_ms_ssim_generated_class_{kk}"] = M.pair_similarity(x_g[sel], cfg.diversity_pairs, seed)["ms_ssim"]
        m[f"diversity_ms_ssim_real_class_{kk}"] = M.pair_similarity(real_x, cfg.diversity_pairs, seed)["ms_ssim"]
        if min(n_c, len(real)) < cfg.min_samples:
            unstable.append(f"class {name}: {n_c} compared / {len(real)} real test images")


def _judge(m: dict[str, Any], extractor: Any, classes: list[str], x_g: np.ndarray, labels: np.ndarray) -> None:
    """Does each image follow its label among this dataset's classes, in the judge's eyes?"""
    from medsynth.training.classifier import predict_proba

    idx = [extractor.class_index(c) for c in classes]
    if any(i is None for i in idx):
        m["cond_judge"] = "none: the extractor does not know this dataset's classes"
        return
    probs = predict_proba(extractor.model, to_res(x_g, int(extractor.meta["resolution"])))
    pred = probs[:, idx].argmax(1)  # restricted to this dataset's classes
    m["cond_in_domain_share"] = float(np.isin(probs.argmax(1), idx).mean())
    reject = out_of_domain(extractor, x_g)
    if reject is not None:
        pred = np.where(reject, -1, pred)
        m["cond_rejected_share"] = float(np.mean(reject))
    m["cond_judge"] = f"domain extractor {extractor.backbone}"
    m["cond_accuracy"] = float((pred == labels).mean())
    for c, name in enumerate(classes):
        sel = labels == c
        if sel.any():
            m[f"cond_accuracy_{key(name)}"] = float((pred[sel] == c).mean())


def utility(m: dict[str, Any], cfg: Any, x_tr: np.ndarray, y_tr: np.ndarray, x_g: np.ndarray,
            labels: np.ndarray | None, x_te: np.ndarray, y_te: np.ndarray, k: int, seed: int) -> None:
    """(a) real, (b) real + synthetic, (c) synthetic only, (d) real duplicated to (b)'s count.

    ``labels`` None (an unconditional set): the synthetic images get classifier (a)'s predictions
    as labels (pseudo-labelling); ``utility_pseudo_labels`` = 1 records it.
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
