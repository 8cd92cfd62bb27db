"""Tracking core: runs land in the project's experiment with lineage tags, nested under a parent."""

import os
import stat

from medsynth.fileio import atomic_dir, write_json
from medsynth.tracking import parent_run, step_run


def test_step_runs_are_tracked_in_the_project_experiment_and_nested(project, project_home):
    import mlflow

    with parent_run(project, "demo") as parent:
        with step_run(project, "ingest", {"a": {"b": 1}}, data_hash="h123") as run:
            mlflow.log_metric("n", 3)
    exp = mlflow.get_experiment_by_name(project.experiment)
    assert exp is not None and exp.artifact_location.startswith((project_home / ".medsynth").as_uri())
    r = mlflow.get_run(run.info.run_id)
    assert r.info.experiment_id == exp.experiment_id == parent.info.experiment_id
    assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert r.data.tags["medsynth.data_hash"] == "h123"
    assert r.data.tags["mlflow.source.git.commit"]
    assert r.data.params["a.b"] == "1" and r.data.metrics["n"] == 3
    assert not (project_home / "mlruns").exists()


def test_atomic_outputs_get_normal_permissions(tmp_path):
    write_json(tmp_path / "x.json", {"a": 1})
    with atomic_dir(tmp_path / "d") as d:
        (d / "f").write_text("x")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == 0o666 & ~mask
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o777 & ~mask
