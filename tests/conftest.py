"""Shared fixtures: every test runs against its own project folder and embedded MLflow store."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def data_dir() -> Path:
    return DATA


@pytest.fixture
def params() -> dict:
    from medsynth.config import read_params

    return read_params(REPO / "params.yaml")


@pytest.fixture(scope="session")
def mlflow_db_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, fully migrated MLflow SQLite store, made once per session.

    Creating a SQLite store runs MLflow's schema migrations (seconds); each test copies this file
    instead, so every test still gets its own real store.
    """
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def project_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_db_template: Path) -> Path:
    """A fresh project folder: artifacts and the SQLite MLflow store live under tmp_path."""
    state = tmp_path / ".medsynth"
    state.mkdir()
    shutil.copyfile(mlflow_db_template, state / "mlflow.db")
    monkeypatch.setenv("MEDSYNTH_HOME", str(tmp_path))
    monkeypatch.setenv("MEDSYNTH_DATA_DIR", str(DATA))
    monkeypatch.setenv("MEDSYNTH_QUIET", "1")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MEDSYNTH_PARENT_RUN_ID", raising=False)
    return tmp_path


@pytest.fixture
def project(project_home: Path, params: dict):
    from medsynth.project import load_project

    return load_project(params)


def pytest_collection_modifyitems(config, items):
    """GPU tests run only where CUDA is present."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


os.environ.setdefault("MEDSYNTH_QUIET", "1")
