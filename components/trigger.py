"""The retraining trigger: the policy applied to the monitor's history and the feedback store.

:func:`decide` logs every decision (trigger or not, and why) to the history; after the caller has
started the retraining (the CLI, through the pipeline package, which components never import),
:func:`record_trigger` marks the decision's batches consumed so they never trigger again, and
:func:`retrain_params` gives the params of that run: the same pipeline on the old + new data.
:func:`approve` records a person's approval of an in-domain (or unverified) batch; off-domain
batches are never eligible (``monitoring/policy.py``).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from medsynth.components.monitor import MonitorConfig, history_of, reference_path
from medsynth.errors import ConfigError
from medsynth.monitoring.policy import Decision
from medsynth.monitoring.policy import decide as policy_decide
from medsynth.prepared import PreparedData
from medsynth.project import ProjectConfig


def decide(cfg: MonitorConfig, project: ProjectConfig, model: str | None = None, version: str | None = None,
           reference: str | Path | None = None, dry_run: bool = False) -> Decision:
    """Apply the trigger policy to the history and the feedback store; log the decision."""
    import datetime as dt

    from medsynth.monitoring.feedback import FeedbackStore, default_url

    history = history_of(project)
    ref = reference_path(cfg, project, reference)
    ref_hash = None
    if (ref / "meta.json").is_file():
        ref_hash = json.loads((ref / "meta.json").read_text()).get("data_hash")
    feedback = None
    if model:
        last = history.last_trigger_time()
        since = dt.datetime.strptime(last[:19], "%Y-%m-%dT%H:%M:%S") if last else None
        store = FeedbackStore(cfg.feedback_url or default_url(project.state_path()))
        try:
            feedback = store.summary(model, version, since=since)
        finally:
            store.close()
    label = f"{model}@{version}" if model and version else model
    decision = policy_decide(history.events("check"), history.consumed_batches(), feedback, cfg.policy,
                             reference_hash=ref_hash, model=label, approved=history.approved_batches())
    history.append("decision", dry_run=dry_run, reference_hash=ref_hash, **decision.to_dict())
    return decision


def approve(project: ProjectConfig, batch: str, by: str, reason: str = "") -> dict[str, Any]:
    """Record a person's approval of one checked batch for retraining; returns the approval event.

    ``batch`` is a batch hash (a unique prefix of at least 8 characters is enough) or the path the
    batch was checked from. Its latest check decides: an off-domain batch can never be approved.

    Raises:
        InputError: no such checked batch, an ambiguous prefix, an off-domain or consumed batch.
    """
    from medsynth.errors import InputError

    history = history_of(project)
    checks = history.events("check")
    hits = {ev["batch_hash"] for ev in checks if ev.get("batch_hash") and (
        (len(batch) >= 8 and ev["batch_hash"].startswith(batch)) or ev.get("batch") == str(Path(batch).resolve()))}
    if len(hits) != 1:
        raise InputError(f"monitor approve: {batch!r} names {'no' if not hits else len(hits)} checked batch(es); "
                         "give a batch hash (>= 8 characters) from `medsynth monitor history`")
    h = hits.pop()
    latest = [ev for ev in checks if ev.get("batch_hash") == h][-1]
    if latest.get("domain") == "off":
        raise InputError(f"monitor approve: batch {h[:12]} was found off-domain ({latest.get('domain_reason', '')}); "
                         "off-domain data is never used for retraining")
    if h in history.consumed_batches():
        raise InputError(f"monitor approve: batch {h[:12]} was already used by a retraining")
    return history.append("approval", batch_hash=h, batch=latest.get("batch"), by=by, reason=reason,
                          domain=latest.get("domain") or "unverified")


def record_trigger(project: ProjectConfig, decision: Decision, launched: dict[str, Any]) -> None:
    """Mark the decision's batches consumed (after a launch started): they never trigger again."""
    history_of(project).append("trigger", trigger=True, batches=decision.batches, reasons=decision.reasons,
                               model=decision.model, launched=launched)


def retrain_params(params: dict[str, Any], decision: Decision, reference: PreparedData,
                   overrides: dict[str, str] | None = None) -> dict[str, Any]:
    """params.yaml with the decision's batches added as sources of the configured dataset.

    The retraining then runs the same pipeline on old + new data (each batch keeps the
    reference's classes; its records without a split are split by preprocess). Only the decision's
    eligible batches are added; an off-domain batch is refused even if a decision names it.

    Raises:
        ConfigError: the dataset's classes differ from the champion's, or an off-domain batch.
    """
    from medsynth.components.ingest import IngestConfig, class_list
    from medsynth.config import load_stage

    new = copy.deepcopy(params)
    ingest_cfg = load_stage(IngestConfig, "ingest", new, overrides)  # checks the dataset name
    name = ingest_cfg.dataset
    sources = new["ingest"]["datasets"][name]
    declared, _ = class_list(ingest_cfg.sources)
    if not set(reference.classes) <= set(declared):
        raise ConfigError(f"ingest.dataset {name!r} declares classes {declared}, the champion was trained on "
                          f"{reference.classes}: set ingest.dataset to the champion's dataset before retraining")
    bad = sorted(set(decision.batches) & set(decision.excluded))
    if bad:
        raise ConfigError(f"retraining: batch(es) {', '.join(b[:12] for b in bad)} are off-domain and never used")
    mods = list(reference.meta.get("modalities") or ["XR"])
    for p in decision.batch_paths:
        sources.append({"path": str(Path(p).resolve()), "format": "auto", "modality": mods[0],
                        "classes": list(reference.classes)})
    return new
