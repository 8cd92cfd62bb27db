"""Server mode for real: medsynth against an MLflow server on PostgreSQL with artifacts in S3.

The same services a deployment uses (the S3 endpoint is moto's server standing in for MinIO/S3):
PostgreSQL 15 holds runs and the registry, the MLflow server proxies artifacts to the bucket, and the
medsynth CLI runs as a user would, in a subprocess, with only MLFLOW_TRACKING_URI pointing at it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import servers  # noqa: E402 - helpers beside this file (tests/ is not a package)

REPO = Path(__file__).resolve().parents[2]
MEDSYNTH = str(Path(sys.executable).with_name("medsynth"))
BUCKET = "medsynth-mlflow"
PREFIX = "mlflow"
# the smallest real run of every step: 40 pneumonia/normal X-rays per split and class, 28 px, smoke training
SETTINGS = ["ingest.dataset=pneumonia", "ingest.limit_per_class=40", "preprocess.resolution=28",
            "train.profile=smoke", "train.max_steps=15", "features.per_class_train=50", "features.epochs=1",
            "evaluate.n_generated=200", "evaluate.utility_epochs=1", "evaluate.kid_subsets=10"]
SMALL = [x for kv in SETTINGS for x in ("--set", kv)]
STEPS = {"ingest", "validate", "preprocess", "train", "evaluate", "promote"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[dict[str, str]]:
    """PostgreSQL + S3 + MLflow server; yields the environment a client needs. Always torn down."""
    reason = servers.postgres_missing_reason()
    if reason:
        pytest.skip(reason)
    with ExitStack() as stack:
        pg = stack.enter_context(servers.postgres())
        s3 = stack.enter_context(servers.moto_s3(BUCKET))
        s3_env = {**servers.S3_ENV, "MLFLOW_S3_ENDPOINT_URL": s3}
        url = stack.enter_context(servers.mlflow_server(pg, f"s3://{BUCKET}/{PREFIX}", s3_env, tmp_path, timeout=180))
        yield {**s3_env, "MLFLOW_TRACKING_URI": url}


def _env(home: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MEDSYNTH_"))}
    env.update(MEDSYNTH_HOME=str(home), MEDSYNTH_DATA_DIR=str(REPO / "data"), MEDSYNTH_QUIET="1",
               OMP_NUM_THREADS="2", **extra)
    return env


def _medsynth(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([MEDSYNTH, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.mark.server
@pytest.mark.slow
def test_pipeline_tracks_runs_in_postgres_artifacts_in_s3_and_sets_registry_aliases(server, tmp_path):
    from mlflow.tracking import MlflowClient

    env = _env(tmp_path / "home", server)
    res = _medsynth(["demo", "--params", str(REPO / "params.yaml"), *SMALL], env, timeout=420)
    assert res.returncode == 0, f"demo failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    assert "==> promote" in res.stdout

    # runs: every step is a run of experiment "medsynth" on the server (rows in PostgreSQL)
    client = MlflowClient(tracking_uri=server["MLFLOW_TRACKING_URI"], registry_uri=server["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("medsynth")
    assert exp is not None and exp.artifact_location.startswith("mlflow-artifacts:")  # served by the server
    runs = client.search_runs([exp.experiment_id], max_results=100)
    by_step = {r.data.tags.get("medsynth.step"): r for r in runs}
    assert STEPS <= set(by_step), f"missing step runs: {STEPS - set(by_step)}"
    assert all(r.info.status == "FINISHED" for r in runs)
    assert "fid_domain" in by_step["evaluate"].data.metrics

    # artifacts: the server wrote them into the bucket (the client never talked to S3)
    s3 = servers.s3_client(server["MLFLOW_S3_ENDPOINT_URL"])
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{PREFIX}/")
            for o in page.get("Contents", [])]
    assert keys, "no artifacts in the bucket"
    eval_id = by_step["evaluate"].info.run_id
    reports = [k for k in keys if eval_id in k and k.endswith("report.md")]
    assert reports, f"no evaluation report in S3: {keys[:20]}"
    models = [k for k in keys if k.endswith("MLmodel")]
    assert models, f"no logged model in S3: {keys[:20]}"
    for key in (reports[0], models[0]):  # real content, not empty placeholders
        assert s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"] > 0

    # registry: challenger always, champion only when the gate passed; the gate result is on the version
    [model] = client.search_registered_models()
    challenger = client.get_model_version_by_alias(model.name, "challenger")
    tags = challenger.tags
    assert tags.get("gate.passed") in ("true", "false") and tags.get("gate.summary")
    assert tags.get("gate.grade") in ("refused", "usable", "near-real") and tags.get("gate.grade_reason")
    if tags["gate.passed"] == "true":
        assert client.get_model_version_by_alias(model.name, "champion").version == challenger.version
    else:
        assert "champion" not in model.aliases

    # the registry review reads the same server
    review = _medsynth(["review", "list", "--all"], env, timeout=120)
    assert review.returncode == 0, review.stderr[-2000:]
    assert model.name in review.stdout
    assert tags["gate.grade_reason"][:40] in review.stdout  # the grade and its reason, in words


def test_unreachable_tracking_server_is_a_one_line_error(tmp_path):
    """A dead server: a clear one-line error and a non-zero exit within bounded retries, not a hang."""
    env = _env(tmp_path, {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{servers.free_port()}"})
    t0 = time.monotonic()
    res = _medsynth(["review", "list"], env, timeout=90)
    elapsed = time.monotonic() - t0
    assert res.returncode != 0
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("medsynth: error:"), res.stderr[-2000:]
    assert "127.0.0.1" in lines[0]
    assert elapsed < 60, f"took {elapsed:.0f}s to give up"
