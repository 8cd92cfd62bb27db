"""MLflow wiring: embedded SQLite store by default, a server by ``MLFLOW_TRACKING_URI``.

Every step runs inside :func:`step_run`, which logs the resolved config, the package version, the
git commit and the data hash. When ``MEDSYNTH_PARENT_RUN_ID`` is set (by ``medsynth demo`` or the
pipeline runner) the step's run is nested under that parent run.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medsynth import __version__
from medsynth.config import flatten
from medsynth.errors import RegistryError
from medsynth.project import ProjectConfig

PARENT_ENV = "MEDSYNTH_PARENT_RUN_ID"


def is_main_process() -> bool:
    """True on rank 0 of a torchrun job, and in any non-distributed process."""
    return int(os.environ.get("RANK", "0")) == 0


def tracking_uri(project: ProjectConfig) -> str:
    """The MLflow tracking URI: the environment's, or the embedded SQLite file."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    state = project.state_path()
    state.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{state / 'mlflow.db'}"


def artifact_root(project: ProjectConfig, uri: str) -> str | None:
    """Artifact location for new experiments.

    A tracking server decides its own (or ``MEDSYNTH_ARTIFACT_ROOT``, e.g. ``s3://bucket/mlflow``);
    a file store (SQLite) keeps artifacts under the project's state folder. The scheme decides,
    not the environment: ``mlflow.set_tracking_uri`` exports MLFLOW_TRACKING_URI itself.
    """
    if uri.split(":", 1)[0] in ("http", "https", "databricks"):
        return os.environ.get("MEDSYNTH_ARTIFACT_ROOT")
    return os.environ.get("MEDSYNTH_ARTIFACT_ROOT") or (project.state_path() / "mlartifacts").as_uri()


def setup_mlflow(project: ProjectConfig, experiment: str | None = None) -> str:
    """Point MLflow at the project's store and select (or create) the experiment.

    Returns:
        The experiment id.

    Raises:
        RegistryError: the tracking server cannot be reached (after MLflow's bounded retries).
    """
    # Bounded retries so an unreachable server fails in seconds, not minutes.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    import mlflow

    uri = tracking_uri(project)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    name = experiment or project.experiment
    try:
        exp = mlflow.get_experiment_by_name(name)
        if exp is None:
            return mlflow.create_experiment(name, artifact_location=artifact_root(project, uri))
        return exp.experiment_id
    except Exception as exc:  # noqa: BLE001 - MLflow raises many types for a dead server
        raise RegistryError(f"MLflow at {redact(uri)}: cannot be reached ({first_line(exc)})") from None


def redact(uri: str) -> str:
    """Hide a password in a URI before printing it."""
    if "@" in uri and "://" in uri:
        scheme, rest = uri.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in creds else uri
    return uri


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def git_commit(root: Path | None = None) -> str:
    """The current git commit, with ``-dirty`` when the tree has changes; ``unknown`` outside git."""
    env_commit = os.environ.get("MEDSYNTH_GIT_COMMIT")
    if env_commit:
        return env_commit
    try:
        cwd = str(root) if root else None
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        return f"{sha}-dirty" if dirty else sha
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@contextlib.contextmanager
def step_run(
    project: ProjectConfig,
    step: str,
    config: dict[str, Any] | None = None,
    data_hash: str | None = None,
    experiment: str | None = None,
    tags: dict[str, str] | None = None,
) -> Iterator[Any]:
    """Open an MLflow run for one pipeline step (nested under the parent run when there is one).

    Yields the active ``mlflow.ActiveRun``. Only the main process of a distributed job should call it.
    """
    import mlflow

    experiment_id = setup_mlflow(project, experiment)
    parent = os.environ.get(PARENT_ENV)
    all_tags = {
        "medsynth.step": step,
        "medsynth.version": __version__,
        "mlflow.source.git.commit": git_commit(project.root),
        "medsynth.data_hash": data_hash or "unknown",
        **(tags or {}),
    }
    nested = mlflow.active_run() is not None
    if parent and not nested:
        all_tags["mlflow.parentRunId"] = parent
    if nested:  # a nested run lives in its parent's experiment
        experiment_id = mlflow.active_run().info.experiment_id
    with mlflow.start_run(run_name=step, tags=all_tags, nested=nested, experiment_id=experiment_id) as run:
        if config:
            params = {k: _param(v) for k, v in flatten(config).items()}
            for chunk in _chunks(list(params.items()), 90):
                mlflow.log_params(dict(chunk))
        yield run


@contextlib.contextmanager
def parent_run(project: ProjectConfig, name: str, experiment: str | None = None) -> Iterator[Any]:
    """A top-level run that nests every step started inside it (sets ``MEDSYNTH_PARENT_RUN_ID``)."""
    import mlflow

    experiment_id = setup_mlflow(project, experiment)
    with mlflow.start_run(run_name=name, experiment_id=experiment_id, tags={
        "medsynth.version": __version__,
        "mlflow.source.git.commit": git_commit(project.root),
    }) as run:
        old = os.environ.get(PARENT_ENV)
        os.environ[PARENT_ENV] = run.info.run_id
        try:
            yield run
        finally:
            if old is None:
                os.environ.pop(PARENT_ENV, None)
            else:
                os.environ[PARENT_ENV] = old


def _param(v: Any) -> str:
    s = str(v)
    return s if len(s) <= 500 else s[:497] + "..."


def _chunks(items: list, n: int) -> Iterator[list]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def latest_run_id(tags: dict[str, str]) -> str | None:
    """The newest run (any experiment of the active tracking store) carrying all of ``tags``, or None.

    Used to link a model card to the evaluation run of the same model and data when the step's
    output files do not name it.
    """
    import mlflow

    def quote(v: str) -> str:
        return v.replace("\\", "\\\\").replace("'", "\\'")

    flt = " and ".join(f"tags.`{k}` = '{quote(str(v))}'" for k, v in tags.items())
    try:
        runs = mlflow.search_runs(search_all_experiments=True, filter_string=flt, max_results=1,
                                  order_by=["attributes.start_time DESC"], output_format="list")
    except Exception:  # noqa: BLE001 - a card without the link is better than no promotion
        return None
    return runs[0].info.run_id if runs else None
