"""Registry review for the people who approve models: list challengers, approve/reject, roll back.

Decisions are tags on the model version (``review.decision``, ``review.by``, ``review.at``,
``review.reason``). When ``promote.require_approval`` is on, approving a version whose gate passed
moves ``champion`` (under the same lock and gate as ``medsynth promote``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from medsynth.components.promote import (
    CHALLENGER,
    CHAMPION,
    PromoteConfig,
    _tag,
    _user,
    client,
    get_alias,
    move_champion,
    try_promote,
)
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


def _versions(c: Any, name: str) -> list[Any]:
    from mlflow.exceptions import MlflowException

    try:
        return sorted(c.search_model_versions(f"name='{name}'"), key=lambda m: int(m.version))
    except MlflowException as exc:
        raise RegistryError(f"registry: {first_line(exc)}") from None


def list_versions(project: ProjectConfig, name: str | None = None, only_pending: bool = False) -> list[VersionInfo]:
    """Registered versions (of ``name`` or of every model) with aliases, gate and review state."""
    setup_mlflow(project)
    c = client()
    names = [name] if name else [m.name for m in c.search_registered_models()]
    out: list[VersionInfo] = []
    for n in names:
        # search results do not carry aliases: resolve the two we use once per model
        alias_of = {}
        for alias in (CHAMPION, CHALLENGER):
            mv_alias = get_alias(c, n, alias)
            if mv_alias is not None:
                alias_of.setdefault(str(mv_alias.version), []).append(alias)
        for mv in _versions(c, n):
            tags = mv.tags or {}
            aliases = alias_of.get(str(mv.version), [])
            decision = tags.get("review.decision", "pending")
            if only_pending and (decision != "pending" or CHAMPION in aliases):
                continue
            out.append(VersionInfo(
                name=n, version=str(mv.version), aliases=aliases,
                gate=tags.get("gate.summary", "not gated"), review=decision,
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
    c = client()
    mv = _get_version(c, name, version)
    who = reviewer or _user()
    _tag(c, name, version, {
        "review.decision": "approved" if approve else "rejected",
        "review.by": who,
        "review.at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "review.reason": reason,
    })
    if not approve:
        challenger = get_alias(c, name, CHALLENGER)
        if challenger is not None and str(challenger.version) == str(version):
            c.delete_registered_model_alias(name, CHALLENGER)
        return f"{name} v{version} rejected by {who}: {reason}"
    if (mv.tags or {}).get("gate.passed") != "true":
        return f"{name} v{version} approved by {who}, but its gate did not pass: champion unchanged"
    conditional = len(json.loads((mv.tags or {}).get("lineage.classes", "[]"))) > 1
    gate, promoted, why = try_promote(c, project, cfg, name, version, conditional, actor=who)
    return f"{name} v{version} approved by {who}; " + ("now champion" if promoted else f"champion unchanged: {why}")


def rollback(project: ProjectConfig, cfg: PromoteConfig, name: str, version: str, reason: str) -> str:
    """Move ``champion`` back to an earlier version that passed its gate."""
    from medsynth.components.promote import registry_lock

    setup_mlflow(project)
    c = client()
    mv = _get_version(c, name, version)
    if (mv.tags or {}).get("gate.passed") != "true":
        raise ConfigError(f"{name} v{version}: its gate did not pass; only gated versions can be champion")
    with registry_lock(project, name, cfg.lock_timeout_s):
        cur = get_alias(c, name, CHAMPION)
        move_champion(c, name, version, f"rollback from v{cur.version if cur else 'none'}: {reason}")
    return f"{name}: champion moved from v{cur.version if cur else 'none'} to v{version}"


def _get_version(c: Any, name: str, version: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return c.get_model_version(name, str(version))
    except MlflowException as exc:
        raise RegistryError(f"registry: {name} v{version}: {first_line(exc)}") from None
