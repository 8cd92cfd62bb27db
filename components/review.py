"""Registry review for the people who approve models: list challengers, approve/reject, roll back.

Decisions are tags on the model version (``review.decision``, ``review.by``, ``review.at``,
``review.reason``; names in ``medsynth/registry.py``). When ``promote.require_approval`` is on, approving a version whose gate passed
moves ``champion`` (under the same lock and gate as ``medsynth promote``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from medsynth import registry as reg
from medsynth.components.promote import PromoteConfig, try_promote
from medsynth.errors import ConfigError, RegistryError
from medsynth.project import ProjectConfig
from medsynth.tracking import first_line, setup_mlflow


@dataclass
class VersionInfo:
    name: str
    version: str
    aliases: list[str]
    gate: str
    review: str
    created: str
    card: str
    grade: str = "not graded"  # the gate's grade with its reason in plain words


def _versions(c: Any, name: str) -> list[Any]:
    from mlflow.exceptions import MlflowException

    try:
        return reg.list_versions(c, name)
    except MlflowException as exc:
        raise RegistryError(f"registry: {first_line(exc)}") from None


def list_versions(project: ProjectConfig, name: str | None = None, only_pending: bool = False) -> list[VersionInfo]:
    """Registered versions (of ``name`` or of every model) with aliases, gate and review state."""
    setup_mlflow(project)
    c = reg.client()
    names = [name] if name else [m.name for m in c.search_registered_models()]
    out: list[VersionInfo] = []
    for n in names:
        # search results do not carry aliases: resolve the two we use once per model
        alias_of = reg.aliases_by_version(c, n)
        for mv in _versions(c, n):
            tags = mv.tags or {}
            aliases = alias_of.get(str(mv.version), [])
            decision = tags.get(reg.REVIEW_DECISION, reg.PENDING)
            if only_pending and (decision != reg.PENDING or reg.CHAMPION in aliases):
                continue
            out.append(VersionInfo(
                name=n, version=str(mv.version), aliases=aliases,
                gate=tags.get(reg.GATE_SUMMARY, "not gated"), review=decision,
                grade=tags.get(reg.GATE_GRADE_REASON) or tags.get(reg.GATE_GRADE) or "not graded",
                created=time.strftime("%Y-%m-%d %H:%M", time.gmtime(mv.creation_timestamp / 1000)),
                card=mv.description or "",
            ))
    return out


def decide(project: ProjectConfig, cfg: PromoteConfig, name: str, version: str, approve: bool,
           reason: str, reviewer: str | None = None) -> str:
    """Record a reviewer's decision; an approval of a gated-passed version may move champion."""
    if not reason.strip():
        raise ConfigError("review: --reason is required (say why, for the audit trail)")
    setup_mlflow(project)
    c = reg.client()
    mv = _get_version(c, name, version)
    who = reviewer or reg.current_user()
    reg.set_tags(c, name, version, {
        reg.REVIEW_DECISION: reg.APPROVED if approve else reg.REJECTED,
        reg.REVIEW_BY: who,
        reg.REVIEW_AT: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        reg.REVIEW_REASON: reason,
    })
    if not approve:
        challenger = reg.get_alias(c, name, reg.CHALLENGER)
        if challenger is not None and str(challenger.version) == str(version):
            c.delete_registered_model_alias(name, reg.CHALLENGER)
        return f"{name} v{version} rejected by {who}: {reason}"
    if (mv.tags or {}).get(reg.GATE_PASSED) != "true":
        return f"{name} v{version} approved by {who}, but its gate did not pass: champion unchanged"
    conditional = len(json.loads((mv.tags or {}).get(reg.LINEAGE_CLASSES, "[]"))) > 1
    gate, promoted, why = try_promote(c, project, cfg, name, version, conditional, actor=who)
    return f"{name} v{version} approved by {who}; " + ("now champion" if promoted else f"champion unchanged: {why}")


def rollback(project: ProjectConfig, cfg: PromoteConfig, name: str, version: str, reason: str) -> str:
    """Move ``champion`` back to an earlier version that passed its gate."""
    setup_mlflow(project)
    c = reg.client()
    mv = _get_version(c, name, version)
    if (mv.tags or {}).get(reg.GATE_PASSED) != "true":
        raise ConfigError(f"{name} v{version}: its gate did not pass; only gated versions can be champion")
    with reg.registry_lock(project, name, cfg.lock_timeout_s):
        cur = reg.get_alias(c, name, reg.CHAMPION)
        reg.move_champion(c, name, version, f"rollback from v{cur.version if cur else 'none'}: {reason}")
    return f"{name}: champion moved from v{cur.version if cur else 'none'} to v{version}"


def _get_version(c: Any, name: str, version: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return c.get_model_version(name, str(version))
    except MlflowException as exc:
        raise RegistryError(f"registry: {name} v{version}: {first_line(exc)}") from None
