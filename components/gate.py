"""The promotion gate: a policy from params.yaml decides whether a challenger may become champion.

Pure logic over two metric mappings (challenger, current champion), so it is easy to test and the
same code runs in ``medsynth promote``, the KFP ``dsl.If`` condition and the review commands.
Each check says what it compared and why it passed or failed; the list is stored as tags on the
model version.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from medsynth.errors import ConfigError


@dataclass(frozen=True)
class GatePolicy:
    """``promote.gate`` in params.yaml. A limit set to null is not checked.

    Metric names refer to keys of the evaluation's metrics.json.
    """

    fid_metric: str = "fid_domain"
    fid_tolerance: float = 0.10  # challenger FID-domain <= champion's x (1 + tolerance)
    max_fid: float | None = None  # absolute ceiling, also when there is no champion yet
    near_copy_metric: str = "privacy_near_copy_share"
    max_near_copy_share: float | None = 0.02
    cond_acc_metric: str = "cond_accuracy"
    min_conditional_accuracy: float | None = 0.5  # conditional models only
    utility_metric: str = "utility_acc_real_plus_synth"
    utility_control_metric: str = "utility_acc_real_dup"
    utility_tolerance: float | None = 0.02  # (b) >= (d) - tolerance, datasets with >= 2 classes
    coverage_metric: str = "prdc_coverage"
    min_coverage: float | None = None  # mode collapse: share of real images with a generated neighbour
    diversity_metric: str = "diversity_ms_ssim_generated"
    diversity_real_metric: str = "diversity_ms_ssim_real"
    max_diversity_ratio: float | None = None  # generated pair MS-SSIM <= real pairs' x ratio
    unstable_flag: str = "unstable"  # metrics.json flag: too few samples for stable metrics
    allow_unstable: bool = False

    def check(self) -> None:
        if self.fid_tolerance < 0:
            raise ConfigError("promote.gate.fid_tolerance: must be >= 0")


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class GateResult:
    passed: bool
    checks: list[Check] = field(default_factory=list)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def summary(self) -> str:
        if self.passed:
            return "gate passed: " + "; ".join(c.name for c in self.checks)
        return "gate failed: " + "; ".join(f"{c.name} ({c.detail})" for c in self.failed)

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "checks": [c.__dict__ for c in self.checks]}


def _num(metrics: dict[str, Any], key: str) -> float | None:
    v = metrics.get(key)
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def evaluate_gate(
    policy: GatePolicy,
    challenger: dict[str, Any],
    champion: dict[str, Any] | None,
    conditional: bool,
) -> GateResult:
    """Apply ``policy`` to the challenger's metrics (and the champion's, when there is one)."""
    checks: list[Check] = []
    fid = _num(challenger, policy.fid_metric)
    if fid is None:
        checks.append(Check("fid_present", False, f"metric {policy.fid_metric!r} missing from the evaluation"))
    else:
        if policy.max_fid is not None:
            ok = fid <= policy.max_fid
            checks.append(Check("fid_ceiling", ok, f"{policy.fid_metric}={fid:.3f} {'<=' if ok else '>'} {policy.max_fid}"))
        champ_fid = _num(champion or {}, policy.fid_metric)
        if champ_fid is not None:
            limit = champ_fid * (1 + policy.fid_tolerance)
            ok = fid <= limit
            checks.append(Check(
                "fid_vs_champion", ok,
                f"{policy.fid_metric}={fid:.3f} {'<=' if ok else '>'} champion {champ_fid:.3f} x {1 + policy.fid_tolerance:.2f} = {limit:.3f}",
            ))
    if policy.max_near_copy_share is not None:
        share = _num(challenger, policy.near_copy_metric)
        if share is None:
            checks.append(Check("privacy", False, f"metric {policy.near_copy_metric!r} missing"))
        else:
            ok = share <= policy.max_near_copy_share
            checks.append(Check("privacy", ok, f"near-copy share {share:.4f} {'<=' if ok else '>'} {policy.max_near_copy_share}"))
    if conditional and policy.min_conditional_accuracy is not None:
        acc = _num(challenger, policy.cond_acc_metric)
        if acc is None:
            checks.append(Check("conditional_accuracy", False, f"metric {policy.cond_acc_metric!r} missing"))
        else:
            ok = acc >= policy.min_conditional_accuracy
            checks.append(Check("conditional_accuracy", ok, f"{acc:.3f} {'>=' if ok else '<'} {policy.min_conditional_accuracy}"))
    if policy.utility_tolerance is not None:
        b, d = _num(challenger, policy.utility_metric), _num(challenger, policy.utility_control_metric)
        if b is not None and d is not None:  # only datasets with >= 2 classes report utility
            ok = b >= d - policy.utility_tolerance
            checks.append(Check(
                "utility", ok,
                f"real+synthetic ACC {b:.3f} {'>=' if ok else '<'} duplicated-real control {d:.3f} - {policy.utility_tolerance}",
            ))
    if policy.min_coverage is not None:
        cov = _num(challenger, policy.coverage_metric)
        ok = cov is not None and cov >= policy.min_coverage
        checks.append(Check("coverage", ok, f"{policy.coverage_metric}={cov if cov is None else round(cov, 3)} "
                                            f"{'>=' if ok else '<'} {policy.min_coverage} (mode collapse)"))
    if policy.max_diversity_ratio is not None:
        g, r = _num(challenger, policy.diversity_metric), _num(challenger, policy.diversity_real_metric)
        if g is not None and r:
            ok = g <= r * policy.max_diversity_ratio
            checks.append(Check("diversity", ok, f"generated MS-SSIM {g:.3f} {'<=' if ok else '>'} real {r:.3f} "
                                                 f"x {policy.max_diversity_ratio}"))
    if challenger.get(policy.unstable_flag) and not policy.allow_unstable:
        checks.append(Check("stable_metrics", False, "too few samples for stable metrics (see the evaluation report)"))
    return GateResult(passed=all(c.passed for c in checks) and bool(checks), checks=checks)
