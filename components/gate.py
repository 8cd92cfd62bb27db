"""The promotion gate: a policy from params.yaml decides whether a challenger may become champion.

Pure logic over metric mappings (challenger, current champion), so it is easy to test and the
same code runs in ``medsynth evaluate`` (which records the floors in metrics.json), ``medsynth
promote``, the KFP ``dsl.If`` condition, the review commands and the app's live evaluation.
Each check says what it compared and why it passed or failed; the list is stored as tags on the
model version.

Two kinds of checks:

1. **Absolute floors** (:func:`floor_checks`), on for every candidate, the first champion too, so a
   model that nothing beats yet is still held to "close to real". They judge at the scale that
   grades (both sets brought down to 16 px: anatomy, layout, modes; a full-resolution detector tells
   even a 0.6 px blur of real images apart, so it is reported, not gated on): FID-domain <= k x the
   real-vs-real floor, C2ST AUC <= t (0.5 = a classifier cannot tell synthetic from real), PRDC
   coverage >= c and recall >= r (missing and dropped modes), generated/real MS-SSIM diversity ratio
   in bounds (too low: noise; too high: mode collapse), conditional accuracy above the majority-class
   share (what a judge that ignores the image scores) and >= an absolute minimum, the synthetic-only
   classifier's accuracy as a share of a real-trained one's (where the real one is not at ceiling),
   and privacy (near-copy share; share of synthetic images closer to a training image than the
   training set's own 5th-percentile NN distance). For conditional models the **worst class**
   decides each floor that has per-class values. Calibrated on both sides by bench/judge_families.py:
   clinically harmless changes of real images pass (all but a +-5 % gain on CT, still open), damaging
   ones are refused.
   ``medsynth evaluate`` records them with the policy's fingerprint; promote reads that record and
   refuses one made under another policy (:func:`recorded_floors`).
2. **A grade** (:func:`grade`): ``refused`` (which floor, in plain words), ``usable`` for pipeline
   testing and pre-training (every floor passes; detectable at full resolution), ``near-real`` (also
   full-resolution detectability and utility).
3. **Relative checks**: FID-domain against the champion's (only when both were evaluated with the same
   extractor sha256 and data hash; otherwise the comparison is skipped, saying why, and the floors
   alone decide), utility against its duplicated-real control, stable metrics.

A metric the policy needs but the evaluation does not carry fails its check ("not measured"), so an
evaluation from an older protocol never passes by omission. A limit set to null turns its check off.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from medsynth import metric_keys as K
from medsynth.errors import ConfigError


@dataclass(frozen=True)
class GatePolicy:
    """``promote.gate`` in params.yaml: every limit lives there and only there (no defaults here).

    Build it with :func:`gate_policy` (params.yaml with ``--set`` overrides). Metric names refer to keys
    of the evaluation's metrics.json (medsynth/metric_keys.py; per-class values:
    ``<metric>_class_<class>``, e.g. ``c2st_auc_16px_class_headct``).
    """

    fid_metric: str  # the FID the floor ratio and the champion comparison use
    fid_tolerance: float  # challenger FID <= champion's x (1 + tolerance)
    max_fid: float | None  # absolute ceiling, also when there is no champion yet
    # -- absolute floors (every candidate) --
    max_fid_floor_ratio: float | None  # k: FID <= k x its real floor (worst class decides)
    c2st_metric: str
    max_c2st_auc: float | None  # t: C2ST AUC (0.5 = indistinguishable) <= t (worst class decides)
    coverage_metric: str
    min_coverage: float | None  # c: share of real images with a generated neighbour (worst class)
    recall_metric: str
    min_recall: float | None  # share of real images inside the generated manifold (mode dropping; worst class)
    diversity_metric: str
    diversity_real_metric: str
    min_diversity_ratio: float | None  # generated/real pair MS-SSIM: below = noise-like
    max_diversity_ratio: float | None  # above = mode collapse
    cond_acc_metric: str
    cond_majority_metric: str
    min_conditional_accuracy: float | None  # overall and the worst class (conditional models)
    cond_accuracy_margin: float | None  # overall >= majority-class share + margin
    cas_metric: str
    cas_real_metric: str
    min_cas_ratio: float | None  # synthetic-only classifier ACC / real-trained ACC (conditional models)
    cas_ceiling: float | None  # ... not applied when the real-trained ACC is at or above this (nothing to learn)
    near_copy_metric: str
    max_near_copy_share: float | None
    p5_metric: str
    max_share_below_train_p5: float | None  # ~0.05 when nothing is copied
    # -- the "near-real" grade (beyond the floors) --
    near_real_c2st_metric: str
    near_real_max_c2st_auc: float | None  # full-resolution detectability at or below this
    near_real_min_cas_ratio: float | None  # and (where utility is measured and not at ceiling) CAS at least this
    # -- relative checks --
    utility_metric: str
    utility_control_metric: str
    utility_tolerance: float | None  # (b) >= (d) - tolerance, datasets with >= 2 classes
    unstable_flag: str  # metrics.json flag: too few samples for stable metrics
    allow_unstable: bool

    def check(self) -> None:
        if self.fid_tolerance < 0:
            raise ConfigError("promote.gate.fid_tolerance: must be >= 0")
        lo, hi = self.min_diversity_ratio, self.max_diversity_ratio
        if lo is not None and hi is not None and not 0 <= lo <= hi:
            raise ConfigError(f"promote.gate: min_diversity_ratio {lo} must be in 0..max_diversity_ratio {hi}")
        for name in ("max_fid_floor_ratio", "max_c2st_auc", "min_coverage", "min_recall", "min_cas_ratio",
                     "max_share_below_train_p5", "near_real_max_c2st_auc", "near_real_min_cas_ratio"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise ConfigError(f"promote.gate.{name}: must be >= 0 or null, got {v}")

    def sha256(self) -> str:
        """The policy's fingerprint: an evaluation judged under another policy is not reused."""
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()


def gate_policy(params: dict[str, Any] | str | os.PathLike | None = None,
                overrides: dict[str, str] | None = None) -> GatePolicy:
    """``promote.gate`` of params.yaml (or ``params``) with ``promote.gate.<key>=value`` overrides applied."""
    from medsynth.config import build, read_params, set_dotted

    data = params if isinstance(params, dict) else read_params(params)
    raw = json.loads(json.dumps((data.get("promote") or {}).get("gate") or {}))
    for key, value in (overrides or {}).items():
        if key.startswith("promote.gate."):
            set_dotted(raw, key.removeprefix("promote.gate."), value)
    policy = build(GatePolicy, raw, "promote.gate")
    policy.check()
    return policy


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
    return {c.name: {"value": c.value, "limit": c.limit, "passed": c.passed, "detail": c.detail,
                     **({"skipped": True} if c.skipped else {})} for c in checks}


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


def _cas(p: GatePolicy, m: dict[str, Any]) -> Check:
    """Classification accuracy score (Ravuri & Vinyals 2019) as a floor, where the task is real: a
    classifier trained on synthetic images only, tested on real, against one trained on as many real
    images. Not applied when the real classifier is at ceiling (it then says nothing) or not measured
    (utility off, one class)."""
    cas, real = metric_number(m, p.cas_metric), metric_number(m, p.cas_real_metric)
    if cas is None or real is None:
        return Check("cas", True, f"not applied: {p.cas_metric} not measured (evaluate.utility off, or fewer than "
                     "two classes)", None, p.min_cas_ratio, floor=True, skipped=True)
    if p.cas_ceiling is not None and real >= p.cas_ceiling:
        return Check("cas", True, f"not applied: the real-trained classifier is at ceiling (ACC {real:.3f} >= "
                     f"{p.cas_ceiling}), so a synthetic-only one cannot show a difference", round(cas, 6),
                     p.min_cas_ratio, floor=True, skipped=True)
    ok = cas >= p.min_cas_ratio
    return Check("cas", ok, f"synthetic-only classifier ACC / real-trained ACC = {cas:.3f} {'>=' if ok else '<'} "
                 f"{p.min_cas_ratio} (real-trained ACC {real:.3f})", round(cas, 6), p.min_cas_ratio, floor=True)


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
    if p.min_recall is not None:
        checks.append(_bounded("recall", p.recall_metric, m, p.min_recall, conditional, False,
                               "share of real images the generated ones reach: mode dropping", measured_only))
    if p.min_diversity_ratio is not None or p.max_diversity_ratio is not None:
        checks.append(_diversity(p, m, conditional, measured_only))
    if conditional:
        checks.extend(_conditional(p, m, measured_only))
        if p.min_cas_ratio is not None:
            checks.append(_cas(p, m))
    if p.max_near_copy_share is not None:
        checks.append(_bounded("privacy", p.near_copy_metric, m, p.max_near_copy_share, False, True,
                               "near-copies of training images", measured_only))
    if p.max_share_below_train_p5 is not None:
        checks.append(_bounded("privacy_p5", p.p5_metric, m, p.max_share_below_train_p5, False, True,
                               "closer to a training image than the training set's own 5th-percentile NN distance; "
                               "~0.05 when nothing is copied", measured_only))
    return [c for c in checks if c is not None]


REFUSED, USABLE, NEAR_REAL = "refused", "usable", "near-real"
GRADE_WORDS = {REFUSED: "refused", USABLE: "usable for pipeline testing and pre-training",
               NEAR_REAL: "near-real"}
# each floor in plain words (the grade's reason, the app, the model card)
FLOOR_WORDS = {"fid_ceiling": "too far from real images (FID-domain ceiling)",
               "fid_floor_ratio": "too far from real images (FID-domain vs its real floor)",
               "c2st": "easy to tell apart from real images even at low resolution (C2ST)",
               "coverage": "misses kinds of real images (coverage)",
               "recall": "drops modes: many real images have nothing like them among the generated (recall)",
               "diversity": "variety unlike real images (noise or mode collapse)",
               "conditional_accuracy": "images often not of the requested class",
               "conditional_accuracy_worst_class": "one class rarely looks like itself",
               "cas": "a classifier trained on its images does much worse on real ones (utility)",
               "privacy": "near-copies of training images", "privacy_p5": "too close to training images",
               "gate_policy": "judged under another gate policy: re-evaluate"}


def grade(policy: GatePolicy, metrics: dict[str, Any], floors: list[Check], conditional: bool) -> tuple[str, str]:
    """(grade, reason in plain words) of one evaluation: ``refused`` (a floor failed: which),
    ``usable`` (every floor passes, a detector still tells it from real at full resolution), or
    ``near-real`` (also passes full-resolution detectability and, where measured, utility)."""
    failed = [c for c in floors if not c.passed]
    if failed:
        return REFUSED, "refused: " + "; ".join(FLOOR_WORDS.get(c.name, c.name) for c in failed)
    p = policy
    why_not = []
    if p.near_real_max_c2st_auc is not None:
        vals = {"all": metric_number(metrics, p.near_real_c2st_metric)}
        if conditional:
            vals.update(per_class(metrics, p.near_real_c2st_metric))
        vals = {k: v for k, v in vals.items() if v is not None}
        if not vals:
            why_not.append("full-resolution detectability not measured")
        else:
            who, auc = _worst(vals, higher_is_worse=True)
            if auc > p.near_real_max_c2st_auc:
                why_not.append(f"a detector still tells it from real at full resolution (C2ST AUC {auc:.2f}"
                               f"{_where(who)} > {p.near_real_max_c2st_auc})")
    cas = next((c for c in floors if c.name == "cas" and not c.skipped), None)
    if cas is not None and p.near_real_min_cas_ratio is not None and cas.value < p.near_real_min_cas_ratio:
        why_not.append(f"a synthetic-only classifier reaches {cas.value:.2f} of the real-trained one's accuracy "
                       f"(near-real needs {p.near_real_min_cas_ratio})")
    if why_not:
        return USABLE, "usable for pipeline testing and pre-training: passes every floor; " + "; ".join(why_not)
    return NEAR_REAL, "near-real: passes every floor, full-resolution detectability and utility"


def floors_record(metrics: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
    """``gate_floors`` as recorded: a dict in metrics.json, JSON text in a registry tag (None: absent or unreadable)."""
    rec = metrics.get(K.GATE_FLOORS)
    if isinstance(rec, str):
        try:
            rec = json.loads(rec)
        except ValueError:
            return None
    return {str(k): v for k, v in rec.items() if isinstance(v, dict)} if isinstance(rec, dict) and rec else None


def recorded_floors(policy: GatePolicy, metrics: dict[str, Any]) -> list[Check] | None:
    """The floors ``medsynth evaluate`` recorded (metrics.json ``gate_floors``), or None when it recorded none.

    A record made under another policy is refused: one failing ``gate_policy`` check naming both fingerprints.
    """
    rec, sha = floors_record(metrics), metrics.get(K.GATE_POLICY_SHA256)
    if rec is None or not sha:
        return None
    if sha != policy.sha256():
        return [Check("gate_policy", False, f"the evaluation was judged under another gate policy ({str(sha)[:12]}, "
                      f"params.yaml now {policy.sha256()[:12]}): re-run medsynth evaluate", floor=True)]
    return [Check(name, bool(r["passed"]), str(r["detail"]), r.get("value"), r.get("limit"), floor=True,
                  skipped=bool(r.get("skipped", False))) for name, r in rec.items()]


GRADE_ORDER = {REFUSED: 0, USABLE: 1, NEAR_REAL: 2}


def standing(policy: GatePolicy, metrics: dict[str, Any]) -> tuple[int, int, float]:
    """How an evaluation stands on the gate's measures, as a key that sorts best first:
    (- grade rank, floors failed, FID-metric / its real floor)."""
    floors = recorded_floors(policy, metrics) or floor_checks(policy, metrics, bool(per_class(metrics, policy.fid_metric)))
    failed = sum(1 for c in floors if not c.passed)
    fid, fl = metric_number(metrics, policy.fid_metric), metric_number(metrics, K.floor(policy.fid_metric))
    ratio = fid / max(fl, 1e-9) if fid is not None and fl is not None else float("inf")
    return -GRADE_ORDER.get(str(metrics.get(K.GATE_GRADE, REFUSED)), 0), failed, ratio


def better_entry(policy: GatePolicy, new: dict[str, Any], old: dict[str, Any]) -> tuple[bool, str]:
    """Whether evaluation ``new`` beats ``old`` on the gate's measures (grade, then floors failed, then
    the FID metric's ratio to its floor), with the reason in words. Both must be judged under ``policy``."""
    a, b = standing(policy, new), standing(policy, old)
    words = (f"grade {new.get(K.GATE_GRADE, REFUSED)} vs {old.get(K.GATE_GRADE, REFUSED)}, floors failed {a[1]} vs "
             f"{b[1]}, {policy.fid_metric} / floor {a[2]:.2f} vs {b[2]:.2f}")
    return a < b, words


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
    # the floors evaluate recorded (under this policy), else computed now from the same numbers
    floors = recorded_floors(policy, challenger)
    checks.extend(floors if floors is not None else floor_checks(policy, challenger, conditional))
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


README_MARKERS = ("<!-- gate-limits:start -->", "<!-- gate-limits:end -->")


def policy_table(policy: GatePolicy) -> str:
    """The README's table of floors, its numbers read from ``policy`` (params.yaml), between its markers."""
    p = policy

    def v(x: Any) -> str:
        return "off" if x is None else f"{x:g}" if isinstance(x, float) else str(x)

    rows = [
        ("`fid_floor_ratio`", f"`{p.fid_metric}` <= **{v(p.max_fid_floor_ratio)}** x its real-vs-real floor",
         "FID-domain of the coarse view (both sets brought down to 16 px and back): distance in anatomy and "
         "layout, not in 8-bit grain; the floor is a real train sample of the same size"),
        ("`c2st`", f"`{p.c2st_metric}` <= **{v(p.max_c2st_auc)}**",
         "a CNN trained to tell real from the set at 16 px, scored on held-out halves (0.5 = indistinguishable); "
         "64 and 32 px are reported beside it"),
        ("`coverage`", f"`{p.coverage_metric}` >= **{v(p.min_coverage)}**", "missing modes (Naeem et al. 2020)"),
        ("`recall`", f"`{p.recall_metric}` >= **{v(p.min_recall)}**", "mode dropping: real images with nothing "
         "like them among the generated (Kynkaanniemi et al. 2019)"),
        ("`diversity`", f"`{p.diversity_metric}` / real within **[{v(p.min_diversity_ratio)}, "
         f"{v(p.max_diversity_ratio)}]**", "below: noise-like; above: mode collapse"),
        ("`conditional_accuracy`", f"accuracy on the requested label >= majority share + **{v(p.cond_accuracy_margin)}**"
         f" and >= **{v(p.min_conditional_accuracy)}**, each class too", "a judge ignoring the image scores the "
         "majority share"),
        ("`cas`", f"synthetic-only / real-trained classifier ACC >= **{v(p.min_cas_ratio)}**; not applied when "
         f"the real one reaches **{v(p.cas_ceiling)}**", "utility where the task is real (Ravuri & Vinyals 2019)"),
        ("`privacy`, `privacy_p5`", f"near-copy share <= **{v(p.max_near_copy_share)}**; share below the "
         f"training set's 5th-percentile NN distance <= **{v(p.max_share_below_train_p5)}**",
         "~0.05 when nothing is copied"),
    ]
    lines = [README_MARKERS[0], "| floor | rule (params.yaml `promote.gate`) | why |", "| --- | --- | --- |",
             *(f"| {a} | {b} | {c} |" for a, b, c in rows), "",
             f"Grades: **refused** (a floor fails), **usable for pipeline testing and pre-training** (every floor "
             f"passes), **near-real** (also `{p.near_real_c2st_metric}` <= **{v(p.near_real_max_c2st_auc)}** at "
             f"full resolution and, where measured, CAS >= **{v(p.near_real_min_cas_ratio)}**).",
             README_MARKERS[1]]
    return "\n".join(lines)


def write_policy_table(doc: str | os.PathLike, policy: GatePolicy | None = None) -> None:
    """Rewrite the table between :data:`README_MARKERS` in ``doc`` from params.yaml (``make readme-gate``)."""
    from pathlib import Path

    path = Path(doc)
    text = path.read_text()
    a, b = text.index(README_MARKERS[0]), text.index(README_MARKERS[1]) + len(README_MARKERS[1])
    path.write_text(text[:a] + policy_table(policy or gate_policy()) + text[b:])
