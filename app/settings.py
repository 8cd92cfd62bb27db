"""The app's configuration (``app:`` in params.yaml) and where it finds its real reference and scorer.

Bounds on everything a person can type live here (count, seed, interpolation steps, truncation),
so the UI and the tests read the same limits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medsynth.config import load_stage, params_defaults, read_params
from medsynth.errors import ConfigError, InputError
from medsynth.project import ProjectConfig, load_project
from medsynth.training.train_config import Precision, resolve_precision

APP_PRECISIONS = (Precision.AUTO, Precision.FP32, Precision.BF16)  # fp16 needs CUDA and a scaler: not served
MAX_SEED = 2**31 - 1  # torch.Generator takes 64-bit seeds; 31 bits keeps them typeable and portable


@dataclass(frozen=True)
@params_defaults("app")
class AppConfig:
    """``app:`` in params.yaml (every key optional)."""

    max_count: int  # images per Generate click (live evaluation stays in seconds)
    default_count: int
    max_interpolation_steps: int
    min_truncation: float  # z is scaled by truncation in (0, 1]
    precision: Precision  # auto | fp32 | bf16 (auto: training's resolve_precision)
    live_eval: bool  # run the quick metrics after each Generate
    reference_size: int  # real training images whose features form the FID-domain reference
    floor_pool: int  # held-out real images used for the "real floor" at the same n
    bootstrap: int  # FID-domain resamples for its spread
    near_copy_ratio: float  # as evaluate: near-copy below ratio x median train-to-train distance
    prepared_dir: str  # "" = <artifacts>/preprocess (used when its data hash matches the model's)
    features_dir: str  # "" = <artifacts>/features/<features.name>
    feedback_url: str  # "" = monitor.feedback_url, or sqlite:///<state>/feedback.db
    display_px: int  # each image is enlarged (nearest neighbour) to about this size on screen
    mlflow_ui_url: str  # where run links in the model card point; "" = the tracking URI if http(s)
    png_band: bool  # exported PNGs get a visible SYNTHETIC band (their metadata says so either way)

    def check(self) -> None:
        if not 1 <= self.max_count <= 1024:
            raise ConfigError(f"app.max_count: must be in 1..1024, got {self.max_count}")
        if not 1 <= self.default_count <= self.max_count:
            raise ConfigError(f"app.default_count: must be in 1..app.max_count ({self.max_count})")
        if not 2 <= self.max_interpolation_steps <= 64:
            raise ConfigError("app.max_interpolation_steps: must be in 2..64")
        if not 0 < self.min_truncation <= 1:
            raise ConfigError("app.min_truncation: must be in (0, 1]")
        if not 10 <= self.reference_size <= 20000 or not 2 <= self.floor_pool <= 20000:
            raise ConfigError("app.reference_size must be in 10..20000 and app.floor_pool in 2..20000")
        if not 0 <= self.bootstrap <= 200:
            raise ConfigError("app.bootstrap: must be in 0..200")
        if not 28 <= self.display_px <= 512:
            raise ConfigError("app.display_px: must be in 28..512")
        if self.precision not in APP_PRECISIONS:
            raise ConfigError(f"app.precision: must be one of {', '.join(p.value for p in APP_PRECISIONS)}, "
                              f"got {self.precision.value}")

    def resolved_precision(self, device_type: str = "cpu") -> Precision:
        """``auto`` -> bf16 on CUDA or a CPU with AMX, fp32 elsewhere (training's rule)."""
        return resolve_precision(self.precision, device_type)


@dataclass
class AppContext:
    params: dict[str, Any]
    project: ProjectConfig
    cfg: AppConfig

    def feedback_url(self) -> str:
        from medsynth.monitoring.feedback import default_url

        url = self.cfg.feedback_url or (self.params.get("monitor") or {}).get("feedback_url") or ""
        return url or default_url(self.project.state_path())

    def prepared_dir(self) -> Path:
        return Path(self.cfg.prepared_dir) if self.cfg.prepared_dir else self.project.artifacts_path() / "preprocess"

    def features_dir(self) -> Path:
        if self.cfg.features_dir:
            return Path(self.cfg.features_dir)
        name = (self.params.get("features") or {}).get("name") or "domain_cnn"
        return self.project.artifacts_path() / "features" / name


def load_context(params_path: str | os.PathLike | None = None) -> AppContext:
    """params.yaml (``$MEDSYNTH_PARAMS`` or the project's) -> project and app settings.

    Raises:
        ConfigError: a bad value in params.yaml.
    """
    path = params_path or os.environ.get("MEDSYNTH_PARAMS")
    if path is None:
        home = Path(os.environ.get("MEDSYNTH_HOME", "."))
        path = home / "params.yaml" if (home / "params.yaml").is_file() else None
    params = read_params(path) if path else read_params(None)
    return AppContext(params=params, project=load_project(params), cfg=load_stage(AppConfig, "app", params))


def load_scorer(ctx: AppContext) -> Any | None:
    """The domain classifier as a live-eval scorer, or None when it has not been trained yet."""
    from medsynth.app.live_eval import scorer_from_extractor
    from medsynth.training.extractor import load_extractor

    root = ctx.features_dir()
    if not (root / "meta.json").is_file():
        return None
    return scorer_from_extractor(load_extractor(root))


def reference_source(ctx: AppContext, dataset: str, data_hash: str, resolution: int) -> tuple[Any, str]:
    """Real images for a model: the prepared artifact it was trained on, else its bundled npz sources.

    Returns:
        (a PreparedData-like object with ``split``/``sample``/``count``/``classes``/``root``/``data_hash``, a note)

    Raises:
        InputError: neither is available (the message says what to run).
    """
    from medsynth.prepared import PreparedData

    prep_dir = ctx.prepared_dir()
    prepared = None
    if (prep_dir / "meta.json").is_file():
        prepared = PreparedData.load(prep_dir)
        if prepared.resolution == resolution and (not data_hash or data_hash in ("unknown", prepared.data_hash)):
            return prepared, f"prepared data {prep_dir} (hash {prepared.data_hash[:12]})"
    sources = ((ctx.params.get("ingest") or {}).get("datasets") or {}).get(dataset)
    if sources and all(str(s.get("path", "")).endswith(".npz") for s in sources):
        return _NpzReference(ctx, dataset, sources, resolution), (
            f"bundled {dataset!r} sources in {ctx.project.data_path()} at {resolution} px (the prepared "
            f"artifact {'is for other data' if prepared is not None else 'is missing'})")
    raise InputError(f"{prep_dir}: no real reference for dataset {dataset!r} at {resolution} px "
                     "(run `medsynth preprocess` for it)")


class _NpzReference:
    """Train/test splits of a dataset's npz sources through the shared transform (as the extractor reads them)."""

    def __init__(self, ctx: AppContext, dataset: str, sources: list[dict[str, Any]], resolution: int):
        from medsynth.components.features import load_split
        from medsynth.readers import SourceConfig

        srcs = [load_stage(SourceConfig, "source", {"source": s}) for s in sources]
        data_dir = ctx.project.data_path()
        cap = max(ctx.cfg.reference_size, 500)
        self._splits = {sp: load_split(srcs, data_dir, resolution, sp, cap, ctx.project.seed)
                        for sp in ("train", "test")}
        self.classes = self._splits["train"][2]
        self.root = data_dir
        self.data_hash = f"npz:{dataset}"

    def split(self, name: str):
        x, y, _ = self._splits[name]
        return x, y

    def sample(self, name: str, n: int, seed: int = 0):
        """The split (already a capped, seeded sample of the sources)."""
        return self.split(name)

    def count(self, name: str) -> int:
        return len(self._splits[name][0]) if name in self._splits else 0


def dataset_modality(ctx: AppContext, dataset: str, classes: list[str]) -> str:
    """CT / MR / XR for a model: class prefixes (``CT/HeadCT``), else its ingest sources, else the dataset name."""
    prefixed = sorted({c.split("/")[0] for c in classes if "/" in c})
    if prefixed:
        return ", ".join(prefixed)
    sources = ((ctx.params.get("ingest") or {}).get("datasets") or {}).get(dataset) or []
    mods = sorted({str(s.get("modality", "")) for s in sources if s.get("modality")})
    return ", ".join(mods) if mods else dataset
