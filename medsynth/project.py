"""Project-wide settings (the ``project:`` key of params.yaml) and where things live on disk."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medsynth.config import load_stage


@dataclass(frozen=True)
class ProjectConfig:
    """Where data, artifacts and the embedded MLflow store live; the experiment name; the seed."""

    data_dir: str = "data"
    artifacts_dir: str = "artifacts"
    state_dir: str = ".medsynth"
    experiment: str = "medsynth"
    seed: int = 0

    @property
    def root(self) -> Path:
        return Path(os.environ.get("MEDSYNTH_HOME", ".")).resolve()

    def data_path(self) -> Path:
        """The data folder: ``MEDSYNTH_DATA_DIR`` wins over params.yaml."""
        return self._resolve(os.environ.get("MEDSYNTH_DATA_DIR") or self.data_dir)

    def artifacts_path(self) -> Path:
        return self._resolve(self.artifacts_dir)

    def state_path(self) -> Path:
        return self._resolve(self.state_dir)

    def _resolve(self, p: str) -> Path:
        path = Path(p).expanduser()
        return path if path.is_absolute() else (self.root / path)


def load_project(params: dict[str, Any] | str | None = None, overrides: dict[str, str] | None = None) -> ProjectConfig:
    return load_stage(ProjectConfig, "project", params, overrides)
