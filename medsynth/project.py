"""Project-wide settings (the ``project:`` key of params.yaml) and where things live on disk."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medsynth.config import load_stage, params_defaults

BUNDLED_ROOT = Path(__file__).resolve().parents[1]  # the checkout: medsynth/ sits beside data/


@dataclass(frozen=True)
@params_defaults("project")
class ProjectConfig:
    """Where data, artifacts and the embedded MLflow store live; the experiment name; the seed."""

    data_dir: str
    artifacts_dir: str
    state_dir: str
    experiment: str
    seed: int

    @property
    def root(self) -> Path:
        return Path(os.environ.get("MEDSYNTH_HOME", ".")).resolve()

    def data_path(self) -> Path:
        """The data folder: ``MEDSYNTH_DATA_DIR`` wins over params.yaml.

        ``MEDSYNTH_HOME`` moves the project's state (artifacts, MLflow store), not the bundled data:
        a relative ``data_dir`` that does not exist under the home is the checkout's own
        (``<repo>/data``, beside the installed package).
        """
        given = os.environ.get("MEDSYNTH_DATA_DIR")
        if given:
            return self._resolve(given)
        path = self._resolve(self.data_dir)
        bundled = BUNDLED_ROOT / self.data_dir
        if not path.exists() and not Path(self.data_dir).expanduser().is_absolute() and bundled.is_dir():
            return bundled
        return path

    def artifacts_path(self) -> Path:
        return self._resolve(self.artifacts_dir)

    def state_path(self) -> Path:
        return self._resolve(self.state_dir)

    def _resolve(self, p: str) -> Path:
        path = Path(p).expanduser()
        return path if path.is_absolute() else (self.root / path)


def load_project(params: dict[str, Any] | str | None = None, overrides: dict[str, str] | None = None) -> ProjectConfig:
    return load_stage(ProjectConfig, "project", params, overrides)
