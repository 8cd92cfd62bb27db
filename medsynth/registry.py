"""The MLflow model registry as medsynth uses it: the tag schema, the aliases, the client, version
listing and the per-model lock. (The registry of *model kinds*, ``dcgan``/``cgan``, is
``training/kinds.py``.)

Who writes and who reads:

* ``components/promote.py`` registers a version and writes ``metric.*``, ``lineage.*``, ``eval.*``,
  ``synthetic``, then gates it (``gate.*``) and may move ``champion`` (``champion.*``);
* ``components/review.py`` writes reviewers' decisions (``review.*``) and rolls back;
* ``app/model_store.py`` and ``app/card.py`` read all of it.

Every tag name is a constant here; write and read them through these names, never as strings.

| tag | value |
| --- | --- |
| ``metric.<name>`` | one evaluation metric (numbers and ``true``/``false`` flags as text) |
| ``eval.extractor_sha256``, ``eval.data_hash``, ``eval.model_uri`` | how the version was evaluated |
| ``lineage.dataset``, ``lineage.data_hash``, ``lineage.git_commit`` | where it came from |
| ``lineage.classes`` | JSON list of class names (``[]``: unconditional) |
| ``synthetic`` | ``true``: its outputs are synthetic |
| ``gate.passed`` (``true``/``false``), ``gate.summary``, ``gate.checks`` (JSON), ``gate.champion_compared`` | the gate's verdict |
| ``champion.since``, ``champion.by``, ``champion.reason`` | the last time ``champion`` moved here |
| ``review.decision`` (``approved``/``rejected``; absent: pending), ``review.by``, ``review.at``, ``review.reason`` | a reviewer's decision |
"""

from __future__ import annotations

import contextlib
import getpass
import os
import time
from collections.abc import Iterator
from typing import Any

from medsynth import metric_keys as K
from medsynth.errors import RegistryError
from medsynth.project import ProjectConfig
from medsynth.tracking import setup_mlflow

# Aliases on a registered model.
CHAMPION, CHALLENGER = "champion", "challenger"
ALIASES = (CHAMPION, CHALLENGER)

# Version tags (see the table above).
METRIC_PREFIX = "metric."
EVAL_EXTRACTOR_SHA256, EVAL_DATA_HASH, EVAL_MODEL_URI = "eval.extractor_sha256", "eval.data_hash", "eval.model_uri"
EVAL_GATE_POLICY, EVAL_GATE_FLOORS = "eval.gate_policy_sha256", "eval.gate_floors"
PROTOCOL_TAGS = {K.EXTRACTOR_SHA256: EVAL_EXTRACTOR_SHA256, K.DATA_HASH: EVAL_DATA_HASH, K.MODEL_URI: EVAL_MODEL_URI,
                 K.GATE_POLICY_SHA256: EVAL_GATE_POLICY, K.GATE_FLOORS: EVAL_GATE_FLOORS}
LINEAGE_DATASET, LINEAGE_DATA_HASH = "lineage.dataset", "lineage.data_hash"
LINEAGE_GIT_COMMIT, LINEAGE_CLASSES = "lineage.git_commit", "lineage.classes"
SYNTHETIC = "synthetic"
GATE_PASSED, GATE_SUMMARY, GATE_CHECKS = "gate.passed", "gate.summary", "gate.checks"
GATE_CHAMPION_COMPARED = "gate.champion_compared"
GATE_GRADE, GATE_GRADE_REASON = "gate.grade", "gate.grade_reason"
CHAMPION_SINCE, CHAMPION_BY, CHAMPION_REASON = "champion.since", "champion.by", "champion.reason"
REVIEW_DECISION, REVIEW_BY, REVIEW_AT, REVIEW_REASON = "review.decision", "review.by", "review.at", "review.reason"
# review.decision values; PENDING is what readers assume when the tag is absent.
PENDING, APPROVED, REJECTED = "pending", "approved", "rejected"

# Run tag of a training run: sha256 of the generator.pt it logged (checked on every registry load,
# medsynth.generator.verified_generator_file).
GENERATOR_SHA256 = "medsynth.generator_sha256"

TAG_VALUE_MAX = 5000  # characters kept of a tag value


def client(project: ProjectConfig | None = None) -> Any:
    """An ``MlflowClient``; on ``project``'s store when given (``setup_mlflow`` first).

    Raises:
        RegistryError: ``project``'s tracking server cannot be reached.
    """
    from mlflow.tracking import MlflowClient

    if project is not None:
        setup_mlflow(project)
    return MlflowClient()


def quote(name: str) -> str:
    """A model name inside a search filter's single quotes."""
    return name.replace("'", "\\'")


def list_versions(c: Any, name: str, max_results: int | None = None) -> list[Any]:
    """Every registered version of ``name`` (MLflow ``ModelVersion``), oldest first.

    Search results carry no aliases: see :func:`aliases_by_version`. MLflow's errors propagate
    (callers word them for their audience).
    """
    limit = {} if max_results is None else {"max_results": max_results}
    found = c.search_model_versions(f"name='{quote(name)}'", **limit)
    return sorted(found, key=lambda m: int(m.version))


def get_alias(c: Any, name: str, alias: str, any_error: bool = False) -> Any | None:
    """The version ``alias`` points at, or None when it points nowhere.

    ``any_error``: any failure reads as "no alias" (for display); otherwise only MLflow's own
    errors do, so a broken store is not mistaken for "no champion yet" by the gate.
    """
    from mlflow.exceptions import MlflowException

    try:
        return c.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
    except Exception:
        if any_error:
            return None
        raise


def aliases_by_version(c: Any, name: str, any_error: bool = False) -> dict[str, list[str]]:
    """``{version: [aliases]}`` for medsynth's aliases (champion, then challenger)."""
    out: dict[str, list[str]] = {}
    for alias in ALIASES:
        mv = get_alias(c, name, alias, any_error)
        if mv is not None:
            out.setdefault(str(mv.version), []).append(alias)
    return out


def version_metrics(mv: Any) -> dict[str, Any]:
    """Metrics recorded on a model version as ``metric.<name>`` tags."""
    out: dict[str, Any] = {}
    for k, v in (mv.tags or {}).items():
        if not k.startswith(METRIC_PREFIX):
            continue
        key = k[len(METRIC_PREFIX):]
        if v.lower() in ("true", "false"):  # flags such as `unstable` (tags are strings)
            out[key] = v.lower() == "true"
            continue
        try:
            out[key] = float(v)
        except ValueError:
            out[key] = v
    return out


def version_protocol(mv: Any) -> dict[str, str]:
    """How a version was evaluated (extractor sha256, data hash, model URI), from its ``eval.*`` tags."""
    tags = mv.tags or {}
    return {k: tags[t] for k, t in PROTOCOL_TAGS.items() if tags.get(t)}


def set_tags(c: Any, name: str, version: str, tags: dict[str, Any]) -> None:
    """Write ``tags`` on a version (values as text, at most :data:`TAG_VALUE_MAX` characters)."""
    for k, v in tags.items():
        c.set_model_version_tag(name, version, k, str(v)[:TAG_VALUE_MAX])


def current_user() -> str:
    """Who acts (``MEDSYNTH_USER``, else the login name), for the audit tags."""
    try:
        return os.environ.get("MEDSYNTH_USER") or getpass.getuser()
    except Exception:  # noqa: BLE001
        return "unknown"


def move_champion(c: Any, name: str, version: str, reason: str, actor: str | None = None) -> None:
    """Point ``champion`` at ``version`` and record who/when/why on the version."""
    c.set_registered_model_alias(name, CHAMPION, version)
    set_tags(c, name, version, {
        CHAMPION_SINCE: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        CHAMPION_BY: actor or current_user(),
        CHAMPION_REASON: reason,
    })


@contextlib.contextmanager
def registry_lock(project: ProjectConfig, name: str, timeout_s: float) -> Iterator[None]:
    """An exclusive lock per registered model for read-compare-set of the champion alias.

    A file lock in the project's state folder: promotions run from one project folder (a laptop,
    or one pipeline volume on a cluster) share it.
    """
    from filelock import FileLock, Timeout

    lock_dir = project.state_path() / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_dir / f"registry-{name}.lock"))
    try:
        lock.acquire(timeout=timeout_s)
    except Timeout:
        raise RegistryError(f"registry lock for {name!r} busy for {timeout_s:.0f}s (another promotion running?)") from None
    try:
        yield
    finally:
        lock.release()
