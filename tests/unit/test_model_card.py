"""The model card links its evaluation run (issue 14, item 6): found in MLflow by the scored model
URI and the data hash when the evaluation's metrics.json does not name its run."""

from __future__ import annotations

import json
from pathlib import Path


def test_candidate_lineage_names_the_evaluation_run(project, tmp_path: Path):
    import mlflow
    import mlflow.pyfunc

    from medsynth.components.promote import PromoteConfig, candidate
    from medsynth.tracking import setup_mlflow, step_run

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    with mlflow.start_run(experiment_id=setup_mlflow(project), run_name="train",
                          tags={"medsynth.data_hash": "abc"}) as run:
        mlflow.log_params({"model": "cgan"})
        uri = mlflow.pyfunc.log_model(name="generator", python_model=Echo(), pip_requirements=["mlflow"]).model_uri
    with step_run(project, "evaluate", {}, "abc", tags={"medsynth.model_uri": "other"}):
        pass  # another model's evaluation: not this card's
    with step_run(project, "evaluate", {}, "abc", tags={"medsynth.model_uri": uri}) as ev_run:
        pass
    train, ev = tmp_path / "train", tmp_path / "eval"
    train.mkdir()
    ev.mkdir()
    (train / "train_summary.json").write_text(json.dumps({"model_uri": uri, "run_id": run.info.run_id, "classes": []}))
    (ev / "metrics.json").write_text(json.dumps({"fid_domain": 1.0, "model_uri": uri,
                                                 "protocol": {"data_hash": "abc", "extractor_sha256": "e" * 64}}))
    c = candidate(PromoteConfig(), project, train, ev, dataset="input-knee")
    assert c.lineage["eval_run_id"] == ev_run.info.run_id
    assert c.name == "medsynth-input-knee-cgan"
