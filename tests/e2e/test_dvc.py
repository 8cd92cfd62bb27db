"""dvc.yaml end to end: `dvc repro` in a clean clone runs ingest -> validate -> preprocess offline,
a second `dvc repro` is a no-op, and a changed param reruns only the stages that read it.

Runs on a `git clone` of the repository (committed files only) in tmp_path, so the working tree,
its artifacts/ and its DVC cache are never touched; ingest keeps 20 real CT images per
(split, class) through a params.yaml edited in the clone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow


def _dvc(clone: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(Path(sys.executable).parent / "dvc"), *args], cwd=clone, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"dvc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _set_params(clone: Path, **values: dict) -> None:
    p = clone / "params.yaml"
    params = yaml.safe_load(p.read_text())
    for section, kv in values.items():
        params[section].update(kv)
    p.write_text(yaml.safe_dump(params, sort_keys=False))


def test_dvc_repro_from_clean_clone(repo: Path, tmp_path: Path, mlflow_db_template: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(repo), str(clone)], check=True, timeout=120)
    # analytics are off in the committed config, so nothing tries to phone home
    assert "analytics = false" in (clone / ".dvc" / "config").read_text()
    _set_params(clone, ingest={"dataset": "ct", "limit_per_class": 20})
    # a migrated MLflow store saves each stage the schema migrations (seconds each)
    (clone / ".medsynth").mkdir()
    shutil.copyfile(mlflow_db_template, clone / ".medsynth" / "mlflow.db")
    env = {k: v for k, v in os.environ.items()
           if k not in ("MEDSYNTH_HOME", "MEDSYNTH_DATA_DIR", "MEDSYNTH_PARAMS", "MLFLOW_TRACKING_URI",
                        "MEDSYNTH_PARENT_RUN_ID")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MEDSYNTH_QUIET"] = "1"

    # 1. first repro runs the three stages in order (the target bounds the test to the data
    #    stages; later stages appended to dvc.yaml have their own tests)
    out = _dvc(clone, env, "repro", "preprocess").stdout
    ran = [s for s in ("ingest", "validate", "preprocess") if f"Running stage '{s}'" in out]
    assert ran == ["ingest", "validate", "preprocess"]
    art = clone / "artifacts"
    meta = json.loads((art / "preprocess" / "meta.json").read_text())
    assert meta["counts"] == {s: {"AbdomenCT": 20, "ChestCT": 20, "HeadCT": 20} for s in ("train", "val", "test")}
    assert (art / "preprocess" / "train_x.npy").is_file() and (art / "validate" / "report.md").is_file()
    vm = json.loads((art / "metrics" / "validate.json").read_text())
    assert vm["n_checked"] == 180 and vm["n_failed"] == 0
    assert json.loads((art / "metrics" / "preprocess.json").read_text())["n_images"] == 180
    lock = yaml.safe_load((clone / "dvc.lock").read_text())
    assert set(lock["stages"]) >= {"ingest", "validate", "preprocess"}

    # 2. nothing changed: a second repro runs nothing
    out = _dvc(clone, env, "repro", "preprocess").stdout
    assert "Data and pipelines are up to date." in out and "Running stage" not in out

    # 3. a preprocess param changes: only preprocess reruns
    _set_params(clone, preprocess={"resolution": 32})
    out = _dvc(clone, env, "repro", "preprocess").stdout
    assert "Running stage 'preprocess'" in out
    assert "Running stage 'ingest'" not in out and "Running stage 'validate'" not in out
    assert json.loads((art / "preprocess" / "meta.json").read_text())["resolution"] == 32
