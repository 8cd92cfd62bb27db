"""What a KFP task needs at run time, inside its container or local subprocess.

The KFP wrappers in :mod:`medsynth.pipelines.ops` import this module inside their bodies (KFP
serialises each wrapper's source into the compiled YAML, so module-level helpers are not there).
It turns the pipeline's parameter dicts back into the same typed configs the CLI builds, and groups
the steps of one pipeline run under one MLflow parent run.

Parameters travel as JSON strings, one per params.yaml section (``project``, ``ingest``, ...),
resolved on the submitting machine from params.yaml plus ``--set`` overrides. JSON strings rather
than KFP ``dict`` parameters because a protobuf Struct turns integers into floats and cannot hold
``null`` (both appear in params.yaml). This works the same
locally (kfp.local passes them to subprocesses) and on a cluster (they are stored with the run, so a
recurring run keeps the configuration it was scheduled with).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

from medsynth.config import build
from medsynth.project import ProjectConfig
from medsynth.tracking import PARENT_ENV

T = TypeVar("T")

KFP_RUN_TAG = "medsynth.kfp_run"


def section(values: str | dict[str, Any] | None) -> dict[str, Any]:
    """One params section as the pipeline received it (a JSON string) -> a dict."""
    if isinstance(values, dict):
        return dict(values)
    import json

    return dict(json.loads(values)) if values else {}


def stage(cls: type[T], name: str, values: str | dict[str, Any] | None) -> T:
    """Build stage config ``cls`` from the pipeline parameter (type-checked as from params.yaml)."""
    return build(cls, section(values), name)


def enter_step(project: str | dict[str, Any], kfp_run: str = "") -> ProjectConfig:
    """Prepare one pipeline step: its project settings and its MLflow parent run.

    Locally, ``medsynth pipeline run --local`` has already opened the parent run and exported
    ``MEDSYNTH_PARENT_RUN_ID``. On a cluster every step is its own pod, so the first step creates a
    parent run tagged with the KFP run name and later steps find it by that tag.
    """
    proj = stage(ProjectConfig, "project", project)
    if kfp_run and not os.environ.get(PARENT_ENV):
        os.environ[PARENT_ENV] = parent_run_for(proj, kfp_run)
    return proj


def parent_run_for(project: ProjectConfig, kfp_run: str) -> str:
    """The id of the MLflow run that groups the steps of KFP run ``kfp_run`` (created on first use).

    Steps without a dependency (ingest, features) start at the same time on a cluster and may both
    create a parent; each then adopts the oldest one with the tag and deletes its own extra, so all
    steps of one KFP run end up under one parent.
    """
    from mlflow.tracking import MlflowClient

    from medsynth.tracking import setup_mlflow

    exp_id = setup_mlflow(project)
    client = MlflowClient()
    safe = kfp_run.replace("'", "")
    query = f"tags.`{KFP_RUN_TAG}` = '{safe}'"
    order = ["attributes.start_time ASC", "attributes.run_id ASC"]
    found = client.search_runs([exp_id], filter_string=query, order_by=order, max_results=1)
    if found:
        return found[0].info.run_id
    mine = client.create_run(exp_id, run_name=f"pipeline {safe}", tags={KFP_RUN_TAG: safe}).info.run_id
    # The parent only groups its children; it has no work of its own to keep "running".
    client.set_terminated(mine, "FINISHED")
    first = client.search_runs([exp_id], filter_string=query, order_by=order, max_results=1)[0].info.run_id
    if first != mine:
        client.delete_run(mine)
    return first


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON file written by a step, or {} when it is not there."""
    import json

    p = Path(path)
    return json.loads(p.read_text()) if p.is_file() else {}


def scalars(d: dict[str, Any]) -> dict[str, float]:
    """The numeric top-level values of ``d`` (for KFP Metrics artifacts and artifact metadata)."""
    out: dict[str, float] = {}
    for k, v in d.items():
        if isinstance(v, bool):
            out[k] = float(v)
        elif isinstance(v, (int, float)):
            out[k] = float(v)
    return out


def train_info(train_dir: str | os.PathLike) -> dict[str, Any]:
    """What train wrote about the model (``train_summary.json``: run_id, model_uri, classes, ...)."""
    return read_json(Path(train_dir) / "train_summary.json")


def gate_check(cfg: Any, project: ProjectConfig, train_dir: str | os.PathLike,
               eval_dir: str | os.PathLike, dataset: str = "data") -> Any:
    """The promotion gate for the pipeline's ``dsl.If``: the challenger's evaluation vs the champion now.

    The same candidate and policy code as ``medsynth promote``; promote checks again under its
    registry lock, so a champion that changed in between is still respected.

    Returns:
        ``components.gate.GateResult``.
    """
    from medsynth.components.promote import candidate, preview_gate

    return preview_gate(cfg, project, candidate(cfg, project, train_dir, eval_dir, dataset))


def gate_markdown(result: Any) -> str:
    """The gate's decision as a short Markdown report (shown in the KFP UI)."""
    lines = [f"# Promotion gate: {'PASSED' if result.passed else 'FAILED'}", "", "| check | passed | detail |",
             "| --- | --- | --- |"]
    lines += [f"| {c.name} | {'yes' if c.passed else 'no'} | {c.detail} |" for c in result.checks]
    return "\n".join(lines) + "\n"
