"""The promotion gate: a policy from params.yaml decides whether a challenger may become champion.

Pure logic over metric mappings (challenger, current champion), so it is easy to test and the
same code runs in ``medsynth evaluate`` (which records the floors in metrics.json), ``medsynth
promote``, the KFP ``dsl.If`` condition, the review commands and the app's live evaluation.
Each check says what it compared and why it passed or failed; the list is stored as tags on the
model version.

Two kinds of checks:

1. **Absolute floors** (:func:`floor_checks`), on for every candidate, the first champion too, so a
   model that nothing beats yet is still held to "close to real": FID-domain <= k x the real-vs-real
   floor, C2ST AUC <= t (0.5 = a classifier cannot tell synthetic from real), PRDC coverage >= c,
   generated/real MS-SSIM diversity ratio in bounds (too low: noise; too high: mode collapse),
   conditional accuracy above the majority-class share (what a judge that ignores the image
   scores) and >= an absolute minimum, and privacy (near-copy share; share of synthetic images closer
   to a training image than the training set's own 5th-percentile NN distance). For conditional
   models the **worst class** decides each floor that has per-class values.
2. **Relative checks**: FID-domain against the champion's (only when both were evaluated with the same
   extractor sha256 and data hash; otherwise the comparison is skipped, saying why, and the floors
   alone decide), utility against its duplicated-real control, stable metrics.

A metric the policy needs but the evaluation does not carry fails its check ("not measured"), so an
evaluation from an older protocol never passes by omission. A limit set to null turns its check off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from medsynth import metric_keys as K
from medsynth.errors import ConfigError


@dataclass(frozen=True)
class GatePolicy:
    """``promote.gate`` in params.yaml (the limits live there; these defaults mirror it).

    Metric names refer to keys of the evaluation's metrics.json (medsynth/metric_keys.py; per-class
    values: ``<metric>_class_<class>``, e.g. ``c2st_auc_class_headct``).
    """

    fid_metric: str = K.FID_DOMAIN
    fid_tolerance: float = 0.10  # challenger FID-domain <= champion's x (1 + tolerance)
    max_fid: float | None = None  # absolute ceiling, also when there is no champion yet
    # -- absolute floors (every candidate) --
    max_fid_floor_ratio: float | None = 2.5  # k: FID-domain <= k x fid_domain_floor (worst class decides)
    c2st_metric: str = K.C2ST_AUC
    max_c2st_auc: float | None = 0.65  # t: C2ST AUC (0.5 = indistinguishable) <= t (worst class decides)
    coverage_metric: str = K.PRDC_COVERAGE
    min_coverage: float | None = 0.5  # c: share of real images with a generated neighbour (worst class)
    diversity_metric: str = K.DIVERSITY_MS_SSIM_GENERATED
    diversity_real_metric: str = K.DIVERSITY_MS_SSIM_REAL
    min_diversity_ratio: float | None = 0.8  # generated/real pair MS-SSIM: below = noise-like
    max_diversity_ratio: float | None = 1.25  # above = mode collapse
    cond_acc_metric: str = K.COND_ACCURACY
    cond_majority_metric: str = K.COND_MAJORITY_SHARE
    min_conditional_accuracy: float | None = 0.5  # overall and the worst class (conditional models)
    cond_accuracy_margin: float | None = 0.05  # overall >= majority-class share + margin
    near_copy_metric: str = K.PRIVACY_NEAR_COPY_SHARE
    max_near_copy_share: float | None = 0.02
    p5_metric: str = K.PRIVACY_SHARE_BELOW_TRAIN_P5
    max_share_below_train_p5: float | None = 0.10  # ~0.05 when nothing is copied
    # -- relative checks --
    utility_metric: str = K.UTILITY_ACC_REAL_PLUS_SYNTH
    utility_control_metric: str = K.UTILITY_ACC_REAL_DUP
    utility_tolerance: float | None = 0.02  # (b) >= (d) - tolerance, datasets with >= 2 classes
    unstable_flag: str = K.UNSTABLE  # metrics.json flag: too few samples for stable metrics
    allow_unstable: bool = False

    def check(self) -> None:
        if self.fid_tolerance < 0:
            raise ConfigError("promote.gate.fid_tolerance: must be >= 0")
        lo, hi = self.min_diversity_ratio, self.max_diversity_ratio
        if lo is not None and hi is not None and not 0 <= lo <= hi:
            raise ConfigError(f"promote.gate: min_diversity_ratio {lo} must be in 0..max_diversity_ratio {hi}")
        for name in ("max_fid_floor_ratio", "max_c2st_auc", "min_coverage", "max_share_below_train_p5"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise ConfigError(f"promote.gate.{name}: must be >= 0 or null, got {v}")


@dataclass
class Check:
    name: str
    passed: bool
    detail: str
    value: Any = None  # the number the check decided on (the worst class's, for per-class floors)
    limit: Any = None
    floor: bool = False  # an absolute floor (recorded in metrics.json's gate_floors)
    skipped: bool = False  # not applied, for the reason in ``detail`` (counts as passed)


@dataclass
class GateResult:
    passed: bool
    checks: list[Check] = field(default_factory=list)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    @property
    def floors(self) -> dict[str, dict[str, Any]]:
        """Each floor check as ``{value, limit, passed, detail}`` (metrics.json ``gate_floors``)."""
        return floors_dict([c for c in self.checks if c.floor])

    @property
    def floors_passed(self) -> bool:
        return all(c.passed for c in self.checks if c.floor)

    def summary(self) -> str:
        skipped = [f"{c.name} skipped: {c.detail}" for c in self.checks if c.skipped]
        if self.passed:
            return "gate passed: " + "; ".join(c.name for c in self.checks if not c.skipped) + (
                f" ({'; '.join(skipped)})" if skipped else "")
        return "gate failed: " + "; ".join(f"{c.name} ({c.detail})" for c in self.failed)

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "checks": [c.__dict__ for c in self.checks]}


def floors_dict(checks: list[Check]) -> dict[str, dict[str, Any]]:
    return {c.name: {"value": c.value, "limit": c.limit, "passed": c.passed, "detail": c.detail} for c in checks}


def metric_number(metrics: dict[str, Any], key: str) -> float | None:
    """``metrics[key]`` as a float; None when absent, NaN, a flag (bool) or not a number (a dict)."""
    v = metrics.get(key)
    if v is None or isinstance(v, (bool, dict, list)):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def per_class(metrics: dict[str, Any], metric: str) -> dict[str, float]:
    """``{class: value}`` of the keys ``<metric>_class_<class>``."""
    prefix = K.class_prefix(metric)
    out = {}
    for k in metrics:
        if k.startswith(prefix) and (v := metric_number(metrics, k)) is not None:
            out[k[len(prefix):]] = v
    return out


def _missing(name: str, metric: str, limit: Any) -> Check:
    return Check(name, False, f"{metric} not measured (missing from the evaluation)", None, limit, floor=True)


def _worst(values: dict[str, float], higher_is_worse: bool) -> tuple[str, float]:
    key = max(values, key=values.get) if higher_is_worse else min(values, key=values.get)
    return key, values[key]


def _where(name: str) -> str:
    return "" if name == "all" else f" (worst class: {name})"


def _fid_ratio(p: GatePolicy, m: dict[str, Any], conditional: bool, measured_only: bool) -> Check | None:
    k = p.max_fid_floor_ratio
    fid, fl = metric_number(m, p.fid_metric), metric_number(m, K.floor(p.fid_metric))
    if fid is None or fl is None:
        return None if measured_only else _missing("fid_floor_ratio", f"{p.fid_metric} / {K.floor(p.fid_metric)}", k)
    ratios = {"all": fid / max(fl, 1e-9)}
    hi = metric_number(m, K.hi(K.ratio_to_floor(p.fid_metric)))
    note = ""
    if m.get(K.SMALL_REFERENCE) and hi is not None:  # small test split: the pessimistic end decides
        ratios["all"] = max(ratios["all"], hi)
        note = " (upper end of the bootstrap interval: small real test split)"
    if conditional:
        floors = per_class(m, K.floor(p.fid_metric))
        for c, v in per_class(m, p.fid_metric).items():
            if c in floors:
                ratios[c] = v / max(floors[c], 1e-9)
    who, r = _worst(ratios, higher_is_worse=True)
    note = note if who == "all" else ""
    ok = r <= k
    return Check("fid_floor_ratio", ok, f"{p.fid_metric} / real floor = {r:.2f}{note}{_where(who)} "
                 f"{'<=' if ok else '>'} {k} (FID-domain {fid:.3f}, floor {fl:.3f})", round(r, 6), k, floor=True)


def _bounded(name: str, p_metric: str, m: dict[str, Any], limit: float, conditional: bool, higher_is_worse: bool,
             what: str, measured_only: bool, context: str = "") -> Check | None:
    v = metric_number(m, p_metric)
    if v is None:
        return None if measured_only else _missing(name, p_metric, limit)
    values = {"all": v, **(per_class(m, p_metric) if conditional else {})}
    who, w = _worst(values, higher_is_worse)
    ok = w <= limit if higher_is_worse else w >= limit
    op = ("<=" if ok else ">") if higher_is_worse else (">=" if ok else "<")
    return Check(name, ok, f"{p_metric}={w:.3f}{_where(who)} {op} {limit} ({what}){context}", round(w, 6), limit,
                 floor=True)


def _diversity(p: GatePolicy, m: dict[str, Any], conditional: bool, measured_only: bool) -> Check | None:
    lo, hi = p.min_diversity_ratio, p.max_diversity_ratio
    g, r = metric_number(m, p.diversity_metric), metric_number(m, p.diversity_real_metric)
    if g is None or not r:
        return None if measured_only else _missing("diversity", f"{p.diversity_metric} / {p.diversity_real_metric}",
                                                   [lo, hi])
    ratios = {"all": g / r}
    if conditional:
        real = per_class(m, p.diversity_real_metric)
        ratios.update({c: v / real[c] for c, v in per_class(m, p.diversity_metric).items() if real.get(c)})

    def outside(x: float) -> float:  # log-distance outside [lo, hi]; 0 inside
        below = math.log(lo / max(x, 1e-9)) if lo is not None and lo > 0 else 0.0
        above = math.log(max(x, 1e-9) / hi) if hi is not None and hi > 0 else 0.0
        return max(below, above, 0.0)

    who = max(ratios, key=lambda c: (outside(ratios[c]), abs(math.log(max(ratios[c], 1e-9)))))
    x = ratios[who]
    ok = outside(x) == 0.0
    why = "" if ok else (" (noise-like: more diverse than real)" if lo is not None and x < lo
                         else " (mode collapse: images too alike)")
    return Check("diversity", ok, f"generated/real pair MS-SSIM = {x:.3f}{_where(who)} "
                 f"{'within' if ok else 'outside'} [{lo}, {hi}]{why}", round(x, 6), [lo, hi], floor=True)


def _conditional(p: GatePolicy, m: dict[str, Any], measured_only: bool) -> list[Check]:
    out: list[Check] = []
    acc = metric_number(m, p.cond_acc_metric)
    if acc is None:
        return [] if measured_only else [_missing("conditional_accuracy", p.cond_acc_metric, p.min_conditional_accuracy)]
    limits = []
    if p.min_conditional_accuracy is not None:
        limits.append((p.min_conditional_accuracy, "minimum"))
    if p.cond_accuracy_margin is not None:
        maj = metric_number(m, p.cond_majority_metric)
        if maj is None:
            if not measured_only:
                out.append(_missing("conditional_accuracy", p.cond_majority_metric, None))
        else:
            limits.append((maj + p.cond_accuracy_margin, f"majority-class share {maj:.3f} + {p.cond_accuracy_margin}"))
    if limits:
        limit, why = max(limits)
        ok = acc >= limit
        out.append(Check("conditional_accuracy", ok, f"{acc:.3f} {'>=' if ok else '<'} {limit:.3f} ({why})",
                         round(acc, 6), round(limit, 6), floor=True))
    prefix = K.label_prefix(p.cond_acc_metric)
    classes = {k.removeprefix(prefix): v for k in m if k.startswith(prefix) and (v := metric_number(m, k)) is not None}
    if classes and p.min_conditional_accuracy is not None:
        who, w = _worst(classes, higher_is_worse=False)
        ok = w >= p.min_conditional_accuracy
        out.append(Check("conditional_accuracy_worst_class", ok,
                         f"class {who}: {w:.3f} {'>=' if ok else '<'} {p.min_conditional_accuracy} (images generated "
                         "for this class that the judge recognises as it)", round(w, 6), p.min_conditional_accuracy,
                         floor=True))
    return out


def floor_checks(policy: GatePolicy, metrics: dict[str, Any], conditional: bool,
                 measured_only: bool = False) -> list[Check]:
    """The absolute floors of ``policy`` applied to one evaluation's metrics.

    ``measured_only``: skip floors whose metric is absent instead of failing them (the app's live
    evaluation of a small batch, which measures only some of them).
    """
    p, m = policy, metrics
    checks: list[Check | None] = []
    if p.max_fid is not None and (fid := metric_number(m, p.fid_metric)) is not None:
        ok = fid <= p.max_fid
        checks.append(Check("fid_ceiling", ok, f"{p.fid_metric}={fid:.3f} {'<=' if ok else '>'} {p.max_fid}",
                            fid, p.max_fid, floor=True))
    if p.max_fid_floor_ratio is not None:
        checks.append(_fid_ratio(p, m, conditional, measured_only))
    if p.max_c2st_auc is not None:
        ctl = metric_number(m, K.floor(p.c2st_metric))
        checks.append(_bounded("c2st", p.c2st_metric, m, p.max_c2st_auc, conditional, True,
                               "0.5 = indistinguishable from real", measured_only,
                               f"; real-vs-real control {ctl:.3f}" if ctl is not None else ""))
    if p.min_coverage is not None:
        checks.append(_bounded("coverage", p.coverage_metric, m, p.min_coverage, conditional, False,
                               "mode collapse / missing modes", measured_only))
    if p.min_diversity_ratio is not None or p.max_diversity_ratio is not None:
        checks.append(_diversity(p, m, conditional, measured_only))
    if conditional:
        checks.extend(_conditional(p, m, measured_only))
    if p.max_near_copy_share is not None:
        checks.append(_bounded("privacy", p.near_copy_metric, m, p.max_near_copy_share, False, True,
                               "near-copies of training images", measured_only))
    if p.max_share_below_train_p5 is not None:
        checks.append(_bounded("privacy_p5", p.p5_metric, m, p.max_share_below_train_p5, False, True,
                               "closer to a training image than the training set's own 5th-percentile NN distance; "
                               "~0.05 when nothing is copied", measured_only))
    return [c for c in checks if c is not None]


def comparable(challenger: dict[str, Any], champion: dict[str, Any]) -> str | None:
    """Why the two evaluations' scores cannot be compared (None when they can).

    FID-domain depends on the feature extractor and on the real reference data: values from two
    extractor versions or two dataset hashes are different scales.
    """
    for key, what in ((K.EXTRACTOR_SHA256, "feature extractor"), (K.DATA_HASH, "dataset hash")):
        a, b = challenger.get(key), champion.get(key)
        if not a or not b or a == "unknown" or b == "unknown":
            return f"the champion's or challenger's {what} is not recorded"
        if a != b:
            return f"the champion was evaluated with another {what} ({str(b)[:12]} vs {str(a)[:12]})"
    return None


def evaluate_gate(
    policy: GatePolicy,
    challenger: dict[str, Any],
    champion: dict[str, Any] | None,
    conditional: bool,
) -> GateResult:
    """Apply ``policy`` to the challenger's metrics (and the champion's, when there is one).

    ``challenger``/``champion`` may carry ``extractor_sha256`` and ``data_hash`` (the evaluation
    protocol); FID-domain is compared with the champion's only when both match.
    """
    checks: list[Check] = []
    fid = metric_number(challenger, policy.fid_metric)
    if fid is None:
        checks.append(Check("fid_present", False, f"metric {policy.fid_metric!r} missing from the evaluation"))
    champ_fid = metric_number(champion or {}, policy.fid_metric)
    if fid is not None and champ_fid is not None:
        why_not = comparable(challenger, champion or {})
        if why_not:
            checks.append(Check("fid_vs_champion", True, f"{why_not}: FID-domain is not comparable, so the absolute "
                                "floors alone decide (re-evaluate the champion to compare)", skipped=True))
        else:
            limit = champ_fid * (1 + policy.fid_tolerance)
            ok = fid <= limit
            checks.append(Check(
                "fid_vs_champion", ok,
                f"{policy.fid_metric}={fid:.3f} {'<=' if ok else '>'} champion {champ_fid:.3f} x "
                f"{1 + policy.fid_tolerance:.2f} = {limit:.3f}", fid, limit,
            ))
    checks.extend(floor_checks(policy, challenger, conditional))
    if policy.utility_tolerance is not None:
        b, d = metric_number(challenger, policy.utility_metric), metric_number(challenger, policy.utility_control_metric)
        if b is not None and d is not None:  # only datasets with >= 2 classes report utility
            ok = b >= d - policy.utility_tolerance
            checks.append(Check(
                "utility", ok,
                f"real+synthetic ACC {b:.3f} {'>=' if ok else '<'} duplicated-real control {d:.3f} - {policy.utility_tolerance}",
                b, d - policy.utility_tolerance,
            ))
    if challenger.get(policy.unstable_flag) and not policy.allow_unstable:
        checks.append(Check("stable_metrics", False, "too few samples for stable metrics (the evaluation report says "
                            "which set and how to fix it)"))
    return GateResult(passed=all(c.passed for c in checks) and bool(checks), checks=checks)
