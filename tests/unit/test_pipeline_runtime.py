"""What KFP tasks do at run time: configs from JSON parameters, one MLflow parent per KFP run."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest

from medsynth.errors import ConfigError, RegistryError
from medsynth.pipelines import runtime
from medsynth.tracking import PARENT_ENV


def test_stage_builds_the_typed_config_from_json(params: dict) -> None:
    from medsynth.components.ingest import IngestConfig

    cfg = runtime.stage(IngestConfig, "ingest", json.dumps(params["ingest"] | {"limit_per_class": 3}))
    assert cfg.limit_per_class == 3 and cfg.dataset == params["ingest"]["dataset"]
    with pytest.raises(ConfigError, match="ingest: unknown key"):
        runtime.stage(IngestConfig, "ingest", json.dumps({"nope": 1}))


def test_steps_of_one_kfp_run_share_one_parent(project_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    proj = runtime.enter_step(json.dumps({"seed": 1}), "kfp-run-a")
    parent = os.environ[PARENT_ENV]
    assert proj.seed == 1
    monkeypatch.delenv(PARENT_ENV)  # a later step is a new pod: no inherited environment
    assert runtime.parent_run_for(proj, "kfp-run-a") == parent
    assert runtime.parent_run_for(proj, "kfp-run-b") != parent
    run = mlflow.get_run(parent)
    assert run.data.tags[runtime.KFP_RUN_TAG] == "kfp-run-a" and run.info.status == "FINISHED"


def test_an_existing_parent_is_kept(project_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Locally `medsynth pipeline run --local` exports the parent; tasks must not replace it.
    monkeypatch.setenv(PARENT_ENV, "abc123")
    runtime.enter_step("{}", "kfp-run-c")
    assert os.environ[PARENT_ENV] == "abc123"


def test_gate_markdown_lists_each_check() -> None:
    from medsynth.components.gate import Check, GateResult

    md = runtime.gate_markdown(GateResult(False, [Check("privacy", False, "near-copy share 0.2 > 0.01")]))
    assert "FAILED" in md and "| privacy | no | near-copy share 0.2 > 0.01 |" in md


def test_unreachable_mlflow_fails_fast_before_any_step(project_home: Path, params: dict,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from medsynth.pipelines.local import run_local
    from medsynth.pipelines.training_pipeline import pipeline_arguments

    pipeline_arguments(params)  # import every stage's module now, so the timing below is MLflow's

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    t0 = time.perf_counter()
    with pytest.raises(RegistryError, match=f"MLflow at http://127.0.0.1:{port}: cannot be reached"):
        run_local(params, {"ingest.limit_per_class": "4"})
    assert time.perf_counter() - t0 < 30  # bounded retries: seconds, not MLflow's default minutes
    kfp_root = project_home / "artifacts" / "kfp"
    assert not any(p.name.startswith("medsynth-training") for p in kfp_root.glob("*"))
