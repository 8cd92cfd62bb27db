"""How good a model is, in words a clinician reads: one verdict, a few key figures, every metric explained.

Pure functions over a version's metrics (the evaluation's metrics.json keys, medsynth/metric_keys.py,
as the registry carries them), so the page only lays things out and the wording is testable without a browser.

1. **Verdict** (:func:`verdict`): the gate's grade with its reason in plain words: "refused" (which
   floor failed), "usable for pipeline testing and pre-training" (every floor passes; a detector still
   tells it from real at full resolution) or "near-real"; for versions graded before grades existed,
   "realistic" / "needs work" from ``gate_floors_passed``, and "not judged" when the evaluation
   predates the floors. Never from a class classifier alone: it calls noise its favourite class.
2. **Key figures** (:func:`key_figures`): FID-domain beside its real floor, C2ST AUC beside its
   real-vs-real control, coverage beside real's.
3. **Every metric** (:func:`metric_rows`): grouped quality / diversity / privacy / utility, each
   with a one-line meaning, which way is better, and a warning when a gate floor fails or the value
   is far from what real images score.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from medsynth import metric_keys as K
from medsynth.components.gate import FLOOR_WORDS, GRADE_WORDS, REFUSED, floors_record
from medsynth.components.gate import metric_number as num

REALISTIC, NEEDS_WORK, NOT_JUDGED = "realistic", "needs work", "not judged by the current floors"
GROUPS = ("quality", "diversity", "privacy", "utility", "run details")

# gate floor name -> the metric it decides on (params.yaml's promote.gate names them) for the warnings
FLOOR_METRIC = {"fid_ceiling": "fid_metric", "fid_floor_ratio": "fid_metric", "c2st": "c2st_metric",
                "coverage": "coverage_metric", "recall": "recall_metric", "diversity": "diversity_metric",
                "conditional_accuracy": "cond_acc_metric", "conditional_accuracy_worst_class": "cond_acc_metric",
                "cas": "cas_metric", "privacy": "near_copy_metric", "privacy_p5": "p5_metric"}


def floor_metrics() -> dict[str, str]:
    """Each floor name -> the metrics.json key it decides on, from params.yaml's gate policy (read once)."""
    from medsynth.components.gate import gate_policy

    policy = gate_policy()
    keys = {name: getattr(policy, attr) for name, attr in FLOOR_METRIC.items()}
    keys["fid_floor_ratio"] = K.ratio_to_floor(keys["fid_floor_ratio"])
    return keys


@dataclass(frozen=True)
class Info:
    group: str
    label: str
    meaning: str
    better: str  # "lower", "higher", "closer to 0.5", "close to real", "reference"
    real_key: str = ""  # the same measurement on real images, when there is one


# 3. the catalogue: every metric a person may meet, in plain words
CATALOGUE: dict[str, Info] = {
    K.FID_DOMAIN: Info("quality", "FID-domain", "distance between generated and real test images in the project's "
                       "own medical-image feature space (not comparable with published ImageNet FID)", "lower",
                       K.FID_DOMAIN_FLOOR),
    K.FID_DOMAIN_FLOOR: Info("quality", "FID-domain real floor", "the same distance for real training vs real test "
                             "images: what 'as good as real' scores", "reference"),
    K.FID_DOMAIN_RATIO_TO_FLOOR: Info("quality", "FID-domain ÷ real floor", "1 = as close to the test images as real "
                                      "images are", "lower"),
    K.KID_DOMAIN_MEAN: Info("quality", "KID-domain", "like FID-domain, less biased on small sets", "lower",
                            K.KID_DOMAIN_FLOOR_MEAN),
    K.KID_DOMAIN_STD: Info("quality", "KID-domain spread", "its standard deviation over subsets", "reference"),
    K.KID_DOMAIN_FLOOR_MEAN: Info("quality", "KID-domain real floor", "KID-domain of real training vs real test "
                                  "images", "reference"),
    K.C2ST_AUC: Info("quality", "Detectability (C2ST AUC)", "how well a classifier trained for it tells generated "
                     "from real images: 0.5 = cannot tell, 1.0 = always can", "closer to 0.5", K.C2ST_AUC_FLOOR),
    K.C2ST_AUC_FLOOR: Info("quality", "Detectability control", "the same test on two sets of real images",
                           "reference"),
    K.PRDC_PRECISION: Info("quality", "Precision", "share of generated images that resemble some real image",
                           "higher", K.PRDC_PRECISION_FLOOR),
    K.PRDC_DENSITY: Info("quality", "Density", "how densely generated images sit among real ones (about 1 for real)",
                         "close to real", K.PRDC_DENSITY_FLOOR),
    K.NN_SSIM_MEAN: Info("quality", "Structural similarity to nearest real", "SSIM of each image to its nearest real "
                         "test image", "close to real", K.NN_SSIM_MEAN_FLOOR),
    K.NN_PSNR_MEAN: Info("quality", "Pixel similarity to nearest real (dB)", "PSNR of each image to its nearest real "
                         "test image", "close to real", K.NN_PSNR_MEAN_FLOOR),
    K.COND_ACCURACY: Info("quality", "Class accuracy", "share of images the judge recognises as the class that was "
                          "asked for (compare: largest class share)", "higher"),
    K.COND_MAJORITY_SHARE: Info("quality", "Largest class share", "what a judge that ignores the image would score",
                                "reference"),
    K.COND_IN_DOMAIN_SHARE: Info("quality", "In-domain share", "share of images the judge places in this dataset",
                                 "higher"),
    K.C2ST_AUC_32PX: Info("quality", "Detectability at 32 px (C2ST AUC)", "the same test on both sets brought down "
                          "to 32 px", "closer to 0.5", K.floor(K.C2ST_AUC_32PX)),
    K.C2ST_AUC_16PX: Info("quality", "Detectability at 16 px (C2ST AUC)", "the same test on both sets brought down "
                          "to 16 px: anatomy, layout and variety rather than pixel grain (the gate judges here)",
                          "closer to 0.5", K.floor(K.C2ST_AUC_16PX)),
    K.FID_DOMAIN_16PX: Info("quality", "FID-domain, coarse view", "FID-domain of both sets brought down to 16 px and "
                            "back: distance in anatomy and layout (the gate judges here)", "lower",
                            K.floor(K.FID_DOMAIN_16PX)),
    K.ratio_to_floor(K.FID_DOMAIN_16PX): Info("quality", "FID-domain, coarse view ÷ real floor", "1 = as close to "
                                              "the test images as real images are", "lower"),
    K.FID_STANDARD: Info("quality", "FID (ImageNet Inception)", "the standard FID, only with local Inception weights",
                         "lower"),
    K.PRDC_RECALL: Info("diversity", "Recall", "share of real images the generated set can reproduce", "higher",
                        K.PRDC_RECALL_FLOOR),
    K.PRDC_COVERAGE: Info("diversity", "Coverage", "share of real images with a generated image close by; low = "
                          "kinds of images are missing", "higher", K.PRDC_COVERAGE_FLOOR),
    K.PRDC_RECALL_16PX: Info("diversity", "Recall, coarse view", "share of real images the generated set reaches, "
                             "at 16 px; low = modes dropped", "higher", K.floor(K.PRDC_RECALL_16PX)),
    K.PRDC_COVERAGE_16PX: Info("diversity", "Coverage, coarse view", "share of real images with a generated image "
                               "close by, at 16 px", "higher", K.floor(K.PRDC_COVERAGE_16PX)),
    K.DIVERSITY_MS_SSIM_GENERATED: Info("diversity", "Sameness of generated pairs (MS-SSIM)", "how alike two random "
                                        "generated images are; far above real = mode collapse, far below = noise",
                                        "close to real", K.DIVERSITY_MS_SSIM_REAL),
    K.DIVERSITY_MS_SSIM_REAL: Info("diversity", "Sameness of real pairs (MS-SSIM)", "the same for real images",
                                   "reference"),
    K.DIVERSITY_SSIM_GENERATED: Info("diversity", "Sameness of generated pairs (SSIM)", "as above, single scale",
                                     "close to real", K.DIVERSITY_SSIM_REAL),
    K.DIVERSITY_SSIM_REAL: Info("diversity", "Sameness of real pairs (SSIM)", "the same for real images", "reference"),
    K.PRIVACY_NEAR_COPY_SHARE: Info("privacy", "Near-copies of training images", "share of generated images closer "
                                    "to a training image than training images are to each other", "lower"),
    K.PRIVACY_N_NEAR_COPIES: Info("privacy", "Near-copies (count)", "how many generated images are near-copies",
                                  "lower"),
    K.PRIVACY_SHARE_BELOW_TRAIN_P5: Info("privacy", "Unusually close to training", "share closer to a training "
                                         "image than 95% of training images are to theirs; about 0.05 when nothing "
                                         "is copied", "lower"),
    K.PRIVACY_NN_MEDIAN_RATIO: Info("privacy", "Distance to training ÷ training's own", "typical distance to the "
                                    "nearest training image, relative to real images' own; well below 1 = copying",
                                    "higher"),
    K.UTILITY_ACC_REAL: Info("utility", "Classifier accuracy, real data", "a classifier trained on real images, "
                             "tested on real test images", "reference"),
    K.UTILITY_ACC_REAL_PLUS_SYNTH: Info("utility", "Classifier accuracy, real + synthetic", "the same with synthetic "
                                        "images added to training", "higher", K.UTILITY_ACC_REAL_DUP),
    K.UTILITY_ACC_REAL_DUP: Info("utility", "Classifier accuracy, real duplicated", "control: real images repeated "
                                 "to the same count", "reference"),
    K.UTILITY_ACC_SYNTH_ONLY: Info("utility", "Classifier accuracy, synthetic only", "trained on synthetic images "
                                   "alone", "higher", K.UTILITY_ACC_REAL),
    K.UTILITY_AUC_REAL: Info("utility", "Classifier AUC, real data", "as above, ROC AUC", "reference"),
    K.UTILITY_AUC_REAL_PLUS_SYNTH: Info("utility", "Classifier AUC, real + synthetic", "as above, ROC AUC", "higher",
                                        K.UTILITY_AUC_REAL_DUP),
    K.UTILITY_AUC_REAL_DUP: Info("utility", "Classifier AUC, real duplicated", "as above, ROC AUC", "reference"),
    K.UTILITY_AUC_SYNTH_ONLY: Info("utility", "Classifier AUC, synthetic only", "as above, ROC AUC", "higher",
                                   K.UTILITY_AUC_REAL),
    K.UTILITY_CAS_RATIO: Info("utility", "Synthetic-only ÷ real-trained accuracy (CAS)", "a classifier trained on "
                              "synthetic images alone, tested on real ones, against one trained on as many real "
                              "images; 1 = as useful as real", "higher"),
    K.UTILITY_PSEUDO_LABELS: Info("utility", "Labels from a classifier", "1 = the synthetic images' labels came from "
                                  "the real-data classifier", "reference"),
}
_WARN_FAR = 0.5  # beside no floor: a value under half (or over twice) what real images score is a warning


@dataclass
class Row:
    key: str
    label: str
    value: str
    meaning: str
    better: str
    real: str = ""  # the real images' value, formatted
    warning: str = ""  # why this number is a warning sign ("" = none)


@dataclass
class Verdict:
    word: str  # the gate's grade (refused | usable for pipeline testing and pre-training | near-real), else
    # REALISTIC | NEEDS_WORK | NOT_JUDGED for versions graded before grades existed
    sentence: str
    failed: list[str] = field(default_factory=list)  # floor names that failed

    @property
    def ok(self) -> bool | None:
        if self.word == NOT_JUDGED:
            return None
        return self.word not in (NEEDS_WORK, GRADE_WORDS[REFUSED])


@dataclass(frozen=True)
class Figure:
    label: str
    value: str
    beside: str  # the real floor / control it is read against
    help: str


def floors(metrics: dict[str, Any], gate_checks: list[dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """The gate's floors ``{name: {value, limit, passed, detail}}``: ``gate_floors`` (a dict, or JSON in a
    registry tag), else the floor checks recorded with the version's gate result."""
    rec = floors_record(metrics)
    if rec is not None:
        return rec
    return {str(c.get("name")): c for c in gate_checks or [] if c.get("floor") and not c.get("skipped")}


def _passed_flag(metrics: dict[str, Any]) -> bool | None:
    v = metrics.get(K.GATE_FLOORS_PASSED)
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        return bool(v)
    if isinstance(v, str) and v.lower() in ("true", "false", "1", "0", "1.0", "0.0"):
        return v.lower() in ("true", "1", "1.0")
    return None


def verdict(metrics: dict[str, Any], gate_checks: list[dict[str, Any]] | None = None) -> Verdict:
    """1. The gate's grade and its reason in words (``gate_grade``), else the plain verdict from
    ``gate_floors_passed`` (absent: not judged by the current floors)."""
    passed = _passed_flag(metrics)
    fl = floors(metrics, gate_checks)
    g, why = metrics.get(K.GATE_GRADE), metrics.get(K.GATE_GRADE_REASON)
    if isinstance(g, str) and g in GRADE_WORDS:
        failed = [k for k, v in fl.items() if not v.get("passed", True)]
        reason = str(why or "").split(": ", 1)[-1]
        return Verdict(GRADE_WORDS[g], reason[:1].upper() + reason[1:] + ("." if reason else ""), failed)
    if passed is None:
        return Verdict(NOT_JUDGED, "This version was evaluated before the quality floors existed, so nobody has "
                       "measured it against real images the current way. Re-evaluate it before relying on it.")
    if passed:
        n = f" all {len(fl)}" if fl else ""
        return Verdict(REALISTIC, f"Passes{n} quality floors: measured close to real images, varied, "
                       "and not copying its training images.")
    failed = [k for k, v in fl.items() if not v.get("passed", True)]
    why = "; ".join(FLOOR_WORDS.get(k, k) for k in failed) or "see the measurements below"
    return Verdict(NEEDS_WORK, f"Fails {len(failed) or 'some'} of the quality floors: {why}.", failed)


def _f(v: float | None, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    return f"{v:.{digits}g}" if abs(v) < 1000 else f"{v:,.0f}"


def key_figures(metrics: dict[str, Any]) -> list[Figure]:
    """2. Up to three figures, each read against what real images score."""
    out = []
    fid, fl = num(metrics, K.FID_DOMAIN), num(metrics, K.FID_DOMAIN_FLOOR)
    if fid is not None:
        ratio = num(metrics, K.FID_DOMAIN_RATIO_TO_FLOOR) or (fid / fl if fl else None)
        beside = f"real floor {_f(fl)}" + (f" · {ratio:.1f}× the floor" if ratio is not None else "")
        out.append(Figure("Distance to real (FID-domain)", _f(fid), beside if fl is not None else "no real floor",
                          CATALOGUE[K.FID_DOMAIN].meaning + ". Lower is better; real images score the floor."))
    auc, ctl = num(metrics, K.C2ST_AUC), num(metrics, K.C2ST_AUC_FLOOR)
    if auc is not None:
        out.append(Figure("Detectability (C2ST AUC)", f"{auc:.2f}",
                          "0.5 = can't tell" + (f" · real vs real {ctl:.2f}" if ctl is not None else ""),
                          CATALOGUE[K.C2ST_AUC].meaning + "."))
    cov, cov_real = num(metrics, K.PRDC_COVERAGE), num(metrics, K.PRDC_COVERAGE_FLOOR)
    if cov is not None:
        out.append(Figure("Coverage of real variety", f"{cov:.2f}",
                          f"real {cov_real:.2f}" if cov_real is not None else "1.0 = every kind covered",
                          CATALOGUE[K.PRDC_COVERAGE].meaning + ". Higher is better."))
    return out


def _base(key: str) -> tuple[str, str]:
    """``prdc_coverage_class_headct`` -> (``prdc_coverage``, ``headct``); ``cond_accuracy_headct`` likewise."""
    base, cls = K.split_class(key)
    if cls:
        return base, cls
    judge = K.label_prefix(K.COND_ACCURACY)
    if key.startswith(judge) and key not in CATALOGUE:
        return K.COND_ACCURACY, key.removeprefix(judge)
    return key, ""


def _warning(key: str, info: Info, v: float, metrics: dict[str, Any], failed_metrics: dict[str, str]) -> str:
    if key in failed_metrics:
        return f"fails the gate's floor: {failed_metrics[key]}"
    real = num(metrics, info.real_key) if info.real_key else None
    if real is None or real == 0 or info.better in ("reference",):
        return ""
    ratio = v / real
    if info.better == "higher" and ratio < _WARN_FAR:
        return f"less than half of real's {real:.3g}"
    if info.better == "lower" and ratio > 1 / _WARN_FAR:
        return f"more than twice real's {real:.3g}"
    if info.better == "close to real" and not _WARN_FAR <= ratio <= 1 / _WARN_FAR:
        return f"far from real's {real:.3g}"
    if info.better == "closer to 0.5" and v - 0.5 > 2 * max(real - 0.5, 0.05):
        return f"far easier to detect than real vs real ({real:.2f})"
    return ""


def metric_rows(metrics: dict[str, Any], gate_checks: list[dict[str, Any]] | None = None) -> dict[str, list[Row]]:
    """3. Every numeric metric, grouped (quality, diversity, privacy, utility, run details), warnings marked."""
    fl = floors(metrics, gate_checks)
    floor_key = floor_metrics()
    failed_metrics = {floor_key[k]: str(v.get("detail") or k) for k, v in fl.items()
                      if not v.get("passed", True) and k in floor_key}
    groups: dict[str, list[Row]] = {g: [] for g in GROUPS}
    shown_as_real = {i.real_key for i in CATALOGUE.values() if i.real_key}
    order = {k: i for i, k in enumerate(CATALOGUE)}
    for key in sorted(metrics, key=lambda k: (order.get(_base(k)[0], len(order)), k)):
        v = num(metrics, key)
        if v is None or key.endswith(("_lo", "_hi")):
            continue
        base, cls = _base(key)
        if base not in CATALOGUE and base in shown_as_real:
            continue  # a real images' value: it sits in the "real images" column of its metric
        info = CATALOGUE.get(base)
        if info is None:
            groups["run details"].append(Row(key, key.replace("_", " "), _f(v, 4), "", ""))
            continue
        label = info.label + (f" · class {cls}" if cls else "")
        real_key = K.per_class(info.real_key, cls) if cls and info.real_key else info.real_key
        real = num(metrics, real_key) if real_key else None
        lo, hi = num(metrics, K.lo(key)), num(metrics, K.hi(key))
        value = _f(v) + (f" ({_f(lo)}–{_f(hi)})" if lo is not None and hi is not None else "")
        warn = "" if cls else _warning(key, info, v, metrics, failed_metrics)
        if cls and info.real_key:
            warn = _warning(key, Info(info.group, info.label, info.meaning, info.better, real_key), v, metrics, {})
        groups[info.group].append(Row(key, label, value, info.meaning, info.better, _f(real) if real is not None
                                      else "", warn))
    for k, v in fl.items():  # a failed floor whose metric is not among the numbers still shows up
        if not v.get("passed", True) and floor_key.get(k) not in metrics:
            groups["quality"].append(Row(k, FLOOR_WORDS.get(k, k), _f(num(v, "value")), str(v.get("detail", "")),
                                         "", warning="fails the gate's floor"))
    return {g: rows for g, rows in groups.items() if rows}


def warnings(groups: dict[str, list[Row]]) -> list[Row]:
    return [r for rows in groups.values() for r in rows if r.warning]
