"""One source for every gate limit: change a number in params.yaml and every evaluate path applies it.

Guards the risk that the KFP op, the study or the app judge with limits of their own (a code default,
a stale copy), so a policy changed in params.yaml would gate some paths and not others.
"""

import json

import numpy as np
import pytest
import yaml

from medsynth.components.gate import gate_policy
from medsynth.config import read_params

CHANGED = {"max_c2st_auc": 0.61, "max_near_copy_share": 0.031}


@pytest.fixture()
def changed_params(tmp_path, monkeypatch):
    params = read_params()
    params["promote"]["gate"].update(CHANGED)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    monkeypatch.setenv("MEDSYNTH_PARAMS", str(path))
    return params, path


def test_code_defaults_follow_params_yaml(changed_params):
    from medsynth.components.promote import PromoteConfig

    assert gate_policy().max_c2st_auc == 0.61  # evaluate.run / score without a gate use this
    assert PromoteConfig().gate.max_near_copy_share == 0.031
    monkeypatch_free = gate_policy(read_params("params.yaml"))
    assert gate_policy().sha256() != monkeypatch_free.sha256()  # a changed limit: another fingerprint


def test_kfp_evaluate_and_gate_ops_get_the_runs_policy(changed_params):
    from pathlib import Path

    from medsynth.components.promote import PromoteConfig
    from medsynth.pipelines.runtime import stage
    from medsynth.pipelines.training_pipeline import PIPELINE_YAML, pipeline_arguments

    params, _ = changed_params
    arg = pipeline_arguments(params)["promote"]
    assert stage(PromoteConfig, "promote", arg).gate.max_c2st_auc == 0.61
    # the compiled pipeline hands the same `promote` parameter to the evaluate op (which records the
    # floors under it) and to the gate op (which reads them back)
    spec = next(yaml.safe_load_all(Path(PIPELINE_YAML).read_text()))
    tasks = spec["root"]["dag"]["tasks"]
    for task in ("evaluate-op", "gate-op"):
        assert tasks[task]["inputs"]["parameters"]["promote"]["componentInputParameter"] == "promote"


def test_study_evaluates_under_the_params_policy(changed_params, tmp_path):
    from medsynth.project import ProjectConfig
    from medsynth.study.run import get_profile, plan

    params, _ = changed_params
    p = plan(get_profile("micro"), params, {}, ProjectConfig(artifacts_dir=str(tmp_path)))
    assert p.gate.max_c2st_auc == 0.61
    # a study under another policy is another study (its evaluations are not reused)
    unchanged = read_params("params.yaml")
    assert plan(get_profile("micro"), unchanged, {}, ProjectConfig(artifacts_dir=str(tmp_path))).study_id != p.study_id


def test_app_live_check_applies_the_params_policy(changed_params):
    from medsynth.app.live_eval import Reference, evaluate_batch
    from medsynth.app.settings import load_context
    from medsynth.components.promote import PromoteConfig
    from medsynth.config import load_stage
    from medsynth.metrics import train_self_nn

    _, path = changed_params
    ctx = load_context(path)
    rng = np.random.default_rng(0)
    train = rng.uniform(-1, 1, (40, 1, 16, 16)).astype(np.float32)
    ref = Reference(train=train, train_labels=np.zeros(40, np.int64), held_out=train[:10], classes=["a"],
                    source="test", data_hash="h", near_copy_ratio=0.2, train_nn=train_self_nn(train, 40, 0))
    policy = load_stage(PromoteConfig, "promote", ctx.params).gate  # what the app's page passes
    for pol in (policy, None):  # ... and the default when none is passed
        ev = evaluate_batch(train[:8] + 0.001, None, [], ref, bootstrap=0, policy=pol)
        assert ev.floors["privacy"]["limit"] == 0.031 and ev.passed is False  # copies refused
    json.dumps(ev.floors)  # serialisable as shown
