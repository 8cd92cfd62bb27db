"""The retraining-trigger policy: pure logic over the monitor's history and the feedback counts.

Three rules, each configurable in ``monitor.policy`` (params.yaml) and each reported with its
reason whether it fired or not:

1. **Drift confirmed**: the latest ``consecutive_drift`` distinct batches (by content hash) checked
   against the current reference all drifted. One odd batch is not enough; a run of them is.
2. **Feedback**: at least ``feedback_min_ratings`` ratings of the champion since the last trigger,
   with a share of "unrealistic" above ``feedback_max_unrealistic``.
3. **New data**: at least ``new_data_min_images`` validated images in batches not yet used by a
   retraining.

Batches that went into a trigger are *consumed*: they never count again, so the same batch never
triggers twice (checking it again only re-reports it).

What a retraining may learn from is stricter than what may trigger it:

- a batch the monitor found **off-domain** (``monitoring.domain``: another anatomy or modality) is
  never eligible and counts for no rule; the decision lists it as excluded;
- an **in-domain** batch is eligible once approved -- by a person (``medsynth monitor approve``,
  recorded in the history) or by ``auto_approve: true``;
- an **unverified** batch (no extractor to check it) is eligible only after a person's approval.

Drift over in-domain and unverified batches confirms drift; the new-data rule counts eligible
images only. Drift confirmed while no batch is eligible yet is ``await_approval``, not a trigger:
retraining without the new data would not answer the drift. The decision lists the batches a
retraining adds to the training data (every eligible, unconsumed batch).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from medsynth.config import params_defaults
from medsynth.errors import ConfigError
from medsynth.monitoring.feedback import FeedbackSummary


@dataclass(frozen=True)
@params_defaults("monitor.policy")
class PolicyConfig:
    """``monitor.policy`` in params.yaml. A rule whose threshold is null is off."""

    consecutive_drift: int | None
    feedback_min_ratings: int
    feedback_max_unrealistic: float | None
    new_data_min_images: int | None
    auto_approve: bool  # true: in-domain batches are eligible without `medsynth monitor approve`

    def check(self) -> None:
        if self.consecutive_drift is not None and self.consecutive_drift < 1:
            raise ConfigError("monitor.policy.consecutive_drift: must be >= 1 or null")
        if self.feedback_min_ratings < 1:
            raise ConfigError("monitor.policy.feedback_min_ratings: must be >= 1")
        if self.feedback_max_unrealistic is not None and not 0.0 <= self.feedback_max_unrealistic < 1.0:
            raise ConfigError("monitor.policy.feedback_max_unrealistic: must be in [0, 1) or null")
        if self.new_data_min_images is not None and self.new_data_min_images < 1:
            raise ConfigError("monitor.policy.new_data_min_images: must be >= 1 or null")


@dataclass
class BatchState:
    """The latest check of one distinct batch."""

    batch_hash: str
    batch: str
    drifted: bool
    n_valid: int
    time: str
    domain: str = "unverified"  # in | off | unverified (monitoring.domain)
    approved: bool = False  # a person approved it for retraining (`medsynth monitor approve`)


@dataclass
class Decision:
    """What the policy decided, why, and what a retraining would run on."""

    trigger: bool
    action: str  # "retrain" | "await_approval" | "none"
    reasons: list[str]  # the rules that fired
    notes: list[str]  # every rule's state, fired or not (the "why not")
    batches: list[str] = field(default_factory=list)  # hashes a retraining consumes
    batch_paths: list[str] = field(default_factory=list)  # where those batches are
    new_images: int = 0
    model: str | None = None
    excluded: list[str] = field(default_factory=list)  # off-domain batch hashes: never used for retraining
    pending: list[str] = field(default_factory=list)  # eligible once approved

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary_line(self) -> str:
        if self.trigger:
            return f"TRIGGER retraining: {'; '.join(self.reasons)}"
        if self.action == "await_approval":
            return f"AWAITING APPROVAL: {'; '.join(self.reasons + self.notes)}"
        return f"no trigger: {'; '.join(self.notes)}"


def batch_states(checks: list[dict[str, Any]], consumed: set[str],
                 reference_hash: str | None = None, approved: set[str] | None = None) -> list[BatchState]:
    """Distinct unconsumed batches in order of their first check, each with its latest result.

    Checks against another reference (a previous champion's training data) are ignored: their
    verdict says nothing about the current model. A check written before the in-domain check
    existed is ``unverified``.
    """
    order: list[str] = []
    latest: dict[str, BatchState] = {}
    for ev in checks:
        h = ev.get("batch_hash")
        if not h or h in consumed or ev.get("kind", "check") != "check":
            continue
        if reference_hash and ev.get("reference_hash") not in (None, reference_hash):
            continue
        if h not in latest:
            order.append(h)
        latest[h] = BatchState(h, str(ev.get("batch", "")), bool(ev.get("drifted")),
                               int(ev.get("n_valid") or 0), str(ev.get("time", "")),
                               str(ev.get("domain") or "unverified"), h in (approved or set()))
    return [latest[h] for h in order]


def decide(
    checks: list[dict[str, Any]],
    consumed: set[str],
    feedback: FeedbackSummary | None,
    cfg: PolicyConfig,
    reference_hash: str | None = None,
    model: str | None = None,
    approved: set[str] | None = None,
) -> Decision:
    """Apply the three rules to the batches they may use (see the module docstring).

    Args:
        checks: the history's ``check`` events, oldest first.
        consumed: hashes of batches already used by a trigger.
        feedback: ratings of the champion since the last trigger (None: no store or no champion).
        cfg: ``monitor.policy``.
        reference_hash: only checks against this reference count (the champion's training data).
        model: the champion's name/version, recorded in the decision.
        approved: hashes of batches a person approved for retraining.
    """
    every = batch_states(checks, consumed, reference_hash, approved)
    off = [s for s in every if s.domain == "off"]
    states = [s for s in every if s.domain != "off"]  # off-domain batches count for nothing
    eligible = [s for s in states if s.approved or (cfg.auto_approve and s.domain == "in")]
    pending = [s for s in states if s not in eligible]
    reasons: list[str] = []
    notes: list[str] = []
    if off:
        notes.append(f"{len(off)} off-domain batch(es) excluded, never used for retraining: "
                     + ", ".join(s.batch_hash[:12] for s in off))

    # 1. drift over consecutive distinct batches
    n = cfg.consecutive_drift
    if n is None:
        notes.append("drift rule off")
    else:
        run = 0
        for s in reversed(states):
            if not s.drifted:
                break
            run += 1
        msg = f"{run} consecutive drifted batch(es) of {n} needed"
        (reasons if run >= n else notes).append(("drift confirmed: " if run >= n else "") + msg)

    # 2. feedback on the champion
    if cfg.feedback_max_unrealistic is None:
        notes.append("feedback rule off")
    elif feedback is None or feedback.n_total == 0:
        notes.append("no feedback ratings for the champion")
    else:
        share = feedback.unrealistic_share
        msg = (f"{feedback.n_unrealistic}/{feedback.n_total} ratings unrealistic ({share:.0%}; "
               f"threshold {cfg.feedback_max_unrealistic:.0%} with >= {cfg.feedback_min_ratings} ratings)")
        fired = feedback.n_total >= cfg.feedback_min_ratings and share > cfg.feedback_max_unrealistic
        (reasons if fired else notes).append(("feedback: " if fired else "") + msg)

    # 3. enough new validated, eligible data
    new_images = sum(s.n_valid for s in eligible)
    if cfg.new_data_min_images is None:
        notes.append("new-data rule off")
    else:
        fired = new_images >= cfg.new_data_min_images
        msg = (f"{new_images} new validated images in {len(eligible)} approved in-domain batch(es) "
               f"(threshold {cfg.new_data_min_images})")
        (reasons if fired else notes).append(("new data: " if fired else "") + msg)

    if pending:
        notes.append(f"{len(pending)} batch(es) wait for approval (`medsynth monitor approve HASH`): "
                     + ", ".join(f"{s.batch_hash[:12]} ({s.domain})" for s in pending))
    # drift alone, with nothing approved to learn from, waits for a person (or the policy)
    waiting = bool(reasons) and not eligible and all(r.startswith("drift confirmed") for r in reasons)
    trigger = bool(reasons) and not waiting
    return Decision(
        trigger=trigger,
        action="retrain" if trigger else ("await_approval" if waiting else "none"),
        reasons=reasons,
        notes=notes,
        batches=[s.batch_hash for s in eligible] if trigger else [],
        batch_paths=[s.batch for s in eligible] if trigger else [],
        new_images=new_images,
        model=model,
        excluded=[s.batch_hash for s in off],
        pending=[s.batch_hash for s in pending],
    )
