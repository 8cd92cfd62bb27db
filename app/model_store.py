"""What the app knows about the registry: models, versions, aliases, model cards, metrics, gate.

Reads the MLflow registry that ``medsynth promote`` writes (``metric.*``, ``gate.*``,
``lineage.*``, ``review.*`` version tags, named in ``medsynth/registry.py``; the model card is the
version description) and loads a
version's generator by its model URI (``models:/<name>@champion`` or ``models:/<name>/<version>``).
Every failure becomes a :class:`~medsynth.errors.MedsynthError` with a message a person can act on,
so the app can show it as one line instead of a traceback.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from medsynth import metric_keys as K
from medsynth import registry as reg
from medsynth.errors import MedsynthError, RegistryError
from medsynth.project import ProjectConfig
from medsynth.registry import CHAMPION
from medsynth.tracking import first_line, redact, tracking_uri

HOW_TO_MAKE_ONE = (
    "Make one with `make demo` (ingest -> ... -> train -> evaluate -> promote on the bundled data), "
    "or step by step: `medsynth train`, `medsynth evaluate`, `medsynth promote`."
)


class NoModelError(MedsynthError):
    """The registry is reachable but holds nothing the app can serve."""

    exit_code = 2


@dataclass(frozen=True)
class ModelVersion:
    """One registered generator version as the app shows it."""

    name: str
    version: str
    aliases: list[str]
    metrics: dict[str, float | str]
    gate_passed: bool | None  # None: never gated
    gate_summary: str
    gate_checks: list[dict[str, Any]]
    card: str
    classes: list[str]
    dataset: str
    data_hash: str
    created: str
    review: str
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        """The immutable model URI of this version (``models:/name/version``)."""
        return f"models:/{self.name}/{self.version}"

    @property
    def label(self) -> str:
        """``v3 · champion · approved by dr-who on 2026-12-01``: what the version picker shows."""
        return f"v{self.version} · {self.status}"

    @property
    def status(self) -> str:
        """The version's standing in words a reviewer reads (alias, review decision, gate).

        ``champion · approved by X on DATE``, ``champion · chosen by the quality gate on DATE ·
        awaiting review``, ``awaiting review``, ``rejected by X on DATE``, ``not promoted · failed the
        quality gate``, ``not gated``.
        """
        t = self.tags
        decision = t.get(reg.REVIEW_DECISION, reg.PENDING)
        by, at = t.get(reg.REVIEW_BY, "unknown"), _day(t.get(reg.REVIEW_AT, ""))
        reviewed = f"{'approved' if decision == reg.APPROVED else 'rejected'} by {by}" + (f" on {at}" if at else "")
        if CHAMPION in self.aliases:
            if decision == reg.APPROVED:
                return f"champion · {reviewed}"
            since = _day(t.get(reg.CHAMPION_SINCE, ""))
            how = "chosen by the quality gate" + (f" on {since}" if since else "")
            return f"champion · {how} · awaiting review"
        if decision == reg.REJECTED:
            return reviewed
        if self.gate_passed is False:
            return "not promoted · failed the quality gate"
        if decision == reg.APPROVED:
            return f"{reviewed} · not the champion"
        if self.gate_passed is None:
            return "not gated · awaiting review"
        return "awaiting review" + (" · former champion" if t.get(reg.CHAMPION_SINCE) else "")

    @property
    def modality(self) -> str:
        """CT / MR / XR from class names like ``CT/HeadCT`` (multi-modality models) or the dataset."""
        mods = sorted({c.split("/")[0] for c in self.classes if "/" in c})
        return ", ".join(mods) if mods else self.dataset


def connect(project: ProjectConfig) -> Any:
    """An MlflowClient on the project's store.

    Raises:
        RegistryError: the tracking server or database cannot be reached.
    """
    return reg.client(project)


def list_models(project: ProjectConfig) -> list[str]:
    """Names of registered models, champions' models first.

    Raises:
        RegistryError: the registry cannot be reached.
        NoModelError: it is empty (the message says how to make one).
    """
    c = connect(project)
    try:
        names = sorted(m.name for m in c.search_registered_models(max_results=200))
    except Exception as exc:  # noqa: BLE001 - MLflow raises many types for a dead store
        raise RegistryError(f"MLflow registry at {redact(tracking_uri(project))}: cannot be read "
                            f"({first_line(exc)})") from None
    if not names:
        raise NoModelError(f"No generator is registered yet in {redact(tracking_uri(project))}. {HOW_TO_MAKE_ONE}")
    with_champion = [n for n in names if reg.get_alias(c, n, CHAMPION, any_error=True) is not None]
    return with_champion + [n for n in names if n not in with_champion]


def list_versions(project: ProjectConfig, name: str) -> list[ModelVersion]:
    """Every version of ``name``, newest first, with aliases, metrics, gate result and model card.

    Raises:
        RegistryError: the registry cannot be reached or the model does not exist.
        NoModelError: the model has no versions.
    """
    c = connect(project)
    try:
        found = reg.list_versions(c, name, max_results=200)
    except Exception as exc:  # noqa: BLE001
        raise RegistryError(f"registry: model {name!r}: {first_line(exc)}") from None
    if not found:
        raise NoModelError(f"Model {name!r} has no versions. {HOW_TO_MAKE_ONE}")
    alias_of = reg.aliases_by_version(c, name, any_error=True)
    out = [_version(mv, alias_of.get(str(mv.version), [])) for mv in found]
    return sorted(out, key=lambda v: int(v.version), reverse=True)


def default_version(versions: list[ModelVersion]) -> ModelVersion:
    """The champion; without one, the newest version whose gate passed; else the newest."""
    for pick in (lambda v: CHAMPION in v.aliases, lambda v: v.gate_passed is True, lambda v: True):
        for v in versions:
            if pick(v):
                return v
    raise NoModelError(f"no versions to choose from. {HOW_TO_MAKE_ONE}")


def _version(mv: Any, aliases: list[str]) -> ModelVersion:
    tags = dict(mv.tags or {})
    gate = tags.get(reg.GATE_PASSED)
    try:
        checks = json.loads(tags.get(reg.GATE_CHECKS, "[]"))
    except json.JSONDecodeError:
        checks = []
    try:
        classes = list(json.loads(tags.get(reg.LINEAGE_CLASSES, "[]")))
    except json.JSONDecodeError:
        classes = []
    metrics = reg.version_metrics(mv)
    if tags.get(reg.GATE_GRADE):  # the gate's grade and its reason, as promote recorded them
        metrics[K.GATE_GRADE], metrics[K.GATE_GRADE_REASON] = tags[reg.GATE_GRADE], tags.get(reg.GATE_GRADE_REASON, "")
    return ModelVersion(
        name=mv.name, version=str(mv.version), aliases=sorted(aliases), metrics=metrics,
        gate_passed=None if gate is None else gate == "true",
        gate_summary=tags.get(reg.GATE_SUMMARY, "not gated"), gate_checks=checks,
        card=mv.description or "", classes=classes, dataset=tags.get(reg.LINEAGE_DATASET, ""),
        data_hash=tags.get(reg.LINEAGE_DATA_HASH, ""),
        created=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime((mv.creation_timestamp or 0) / 1000)),
        review=tags.get(reg.REVIEW_DECISION, reg.PENDING), tags=tags,
    )


def _day(stamp: str) -> str:
    """``2026-12-01T10:00:00Z`` -> ``2026-12-01`` ("" stays "")."""
    return stamp.split("T", 1)[0]
