"""Train: the preprocessed artifact -> a trained (EMA) generator, tracked in MLflow.

1. Load the prepared artifact (``medsynth.prepared``) and keep the train split resident as uint8.
2. Build the trainer from ``train:`` in params.yaml (profile applied); it resumes automatically
   from ``<out>/checkpoints/last.pt`` when that snapshot matches this model and data.
3. While training, an MLflow callback logs losses, D(x)/D(G(z)), learning rates, images/s, and
   per epoch the diversity statistic (mode collapse) and a sample grid PNG marked synthetic.
4. Log the final EMA generator as an MLflow pyfunc model (weights + spec + our own loader, no
   pickled code), so the registry lists it; its sha256 goes into the run's tags (the tracking
   database, not the artifact store). Later steps load it by ``runs:/<id>/generator`` or
   ``models:/name@alias`` as *weights only* (:func:`medsynth.training.loading.load_generator`): the file is checked against
   that sha256 and read with ``torch.load(weights_only=True)`` into the installed package's
   networks. The stored ``train_pyfunc.py`` is never run by medsynth.

Under torchrun only rank 0 opens the MLflow run and writes files; the others just train.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from medsynth.config import to_dict
from medsynth.errors import InputError
from medsynth.fileio import atomic_path, write_json
from medsynth.generator import GENERATOR_FILE
from medsynth.project import ProjectConfig
from medsynth.registry import GENERATOR_SHA256
from medsynth.training.train_config import TrainConfig

MODEL_NAME = "generator"  # artifact name of the logged MLflow model inside the run
PYFUNC_CODE = Path(__file__).with_name("train_pyfunc.py")
SHA256_TAG = GENERATOR_SHA256  # run tag: sha256 of the logged generator.pt


@dataclass
class TrainOutcome:
    out_dir: Path
    generator_path: Path
    global_step: int
    epochs: int
    resumed_from_step: int | None
    metrics: dict[str, float]
    seconds: float
    run_id: str | None = None
    model_uri: str | None = None


def load_train_data(prepared_dir: str | os.PathLike) -> Any:
    """The prepared artifact's train split as a :class:`TrainData` whose images are read on demand
    (:class:`medsynth.prepared.ImageReader`: memory does not grow with the dataset).

    Raises:
        InputError: not a prepared artifact, or its train split is empty / has bad labels.
    """
    import torch

    from medsynth.prepared import PreparedData
    from medsynth.training.loop import TrainData

    pd = PreparedData.load(prepared_dir)
    try:
        x, y = pd.split_uint8("train")
    except KeyError as exc:
        raise InputError(f"{prepared_dir}: prepared artifact has no {exc} array") from None
    if x.ndim != 4 or x.shape[1] != 1 or x.shape[2] != x.shape[3] or x.shape[2] != pd.resolution:
        raise InputError(f"{prepared_dir}: train images have shape {x.shape}, expected [N, 1, {pd.resolution}, {pd.resolution}]")
    if len(x) == 0:
        raise InputError(f"{prepared_dir}: the train split is empty")
    if y.min() < 0 or y.max() >= pd.num_classes:
        raise InputError(f"{prepared_dir}: label {int(y.max())} out of range for {pd.num_classes} classes")
    mods = list(pd.meta.get("modalities") or [])
    return TrainData(pd.images("train"), torch.from_numpy(y), pd.classes, mods if len(mods) == pd.num_classes else [])


class Probe(Protocol):
    """Measures the generator while it trains (e.g. FID-domain against training time).

    ``attach`` receives the :class:`~medsynth.training.trainer.Trainer` before ``fit``; ``due``
    says whether to measure after global step ``step``; ``measure`` returns metrics logged at that
    step; ``seconds`` is the time spent measuring (kept out of the training time).
    """

    seconds: float

    def attach(self, trainer: Any) -> None: ...
    def due(self, step: int) -> bool: ...
    def measure(self, step: int) -> dict[str, float]: ...


class MlflowCallback:
    """Logs the trainer's reports to the active MLflow run and keeps sample grids in ``out/samples``."""

    def __init__(self, out_dir: Path, bar: Any = None, probe: Probe | None = None):
        self.out_dir = out_dir
        self.bar = bar
        self.probe = probe

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)
        if self.probe is not None and self.probe.due(step):
            mlflow.log_metrics(self.probe.measure(step), step=step)

    def on_epoch_end(self, epoch: int, metrics: dict[str, float], grid: np.ndarray) -> None:
        import mlflow

        keys = ("diversity_fake", "diversity_real", "diversity_ratio", "mode_collapse", "epoch_images_per_s")
        mlflow.log_metrics({k: float(metrics[k]) for k in keys if k in metrics}, step=epoch)
        path = save_grid_png(grid, self.out_dir / "samples" / f"synthetic_samples_epoch_{epoch:03d}.png", epoch)
        mlflow.log_artifact(str(path), artifact_path="samples")
        if metrics.get("mode_collapse"):
            mlflow.set_tag("medsynth.mode_collapse_warning", f"epoch {epoch}: diversity ratio "
                           f"{metrics['diversity_ratio']:.3f} below threshold")


def save_grid_png(grid: np.ndarray, path: Path, epoch: int) -> Path:
    """Write a sample grid as PNG, marked synthetic in its name and its metadata."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("synthetic", "true")
    info.add_text("Description", f"SYNTHETIC images generated by medsynth (epoch {epoch}); not real patient data")
    with atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG", pnginfo=info)
    return path


def log_generator_model(generator_path: Path, resolution: int, classes: list[str]) -> str:
    """Log ``generator.pt`` as a pyfunc model (models-from-code: nothing is pickled). Returns its URI.

    The file's sha256 is set as the run tag ``medsynth.generator_sha256`` first: whoever can write
    to the artifact store cannot change it, and :func:`medsynth.training.loading.load_generator` refuses a file that differs.
    """
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    from medsynth.fileio import sha256_file

    sha = sha256_file(generator_path)
    mlflow.set_tag(SHA256_TAG, sha)
    signature = ModelSignature(
        inputs=Schema([ColSpec("long", "seed"), ColSpec("long", "count"), ColSpec("long", "label", required=False)]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 1, resolution, resolution))]),
    )
    info = mlflow.pyfunc.log_model(
        name=MODEL_NAME, python_model=str(PYFUNC_CODE), artifacts={"generator": str(generator_path)},
        signature=signature, pip_requirements=["medsynth", "torch==2.13.0", "numpy", "pandas"],
        metadata={"synthetic": True, "resolution": resolution, "classes": classes, "generator_sha256": sha},
    )
    return info.model_uri


def run(cfg: TrainConfig, project: ProjectConfig, prepared_dir: str | os.PathLike, out_dir: str | os.PathLike,
        track: bool = True, resume: bool = True, probe: Probe | None = None,
        tags: dict[str, str] | None = None) -> TrainOutcome:
    """The train step. Raises ConfigError/InputError/TrainingError with one clear line.

    Besides the trainer's own metrics the run records its cost: ``model.params_g``/``params_d``,
    ``device.name``, ``peak_memory_mib``/``memory_added_mib`` (see training/resources.py),
    ``train_fit_seconds`` (training only, without ``probe`` time) and ``train_images_per_s_overall``.
    """
    from medsynth.prepared import PreparedData
    from medsynth.training.distributed import is_main_process
    from medsynth.training.trainer import make_trainer

    t0 = time.perf_counter()
    out = Path(out_dir)
    data = load_train_data(prepared_dir)
    data_hash = PreparedData.load(prepared_dir).data_hash
    seed = project.seed if cfg.seed is None else cfg.seed
    main = is_main_process()
    trainer_kwargs = dict(cfg=cfg, data=data, out_dir=out, seed=seed, resume=resume)
    if not (track and main):
        res = make_trainer(**trainer_kwargs).fit()
        return _finish(res, out, data, t0, None, None, main)

    import mlflow

    from medsynth.tracking import step_run
    from medsynth.training.models import count_params
    from medsynth.training.resources import PeakMemory, device_name

    config = to_dict(cfg) | {"seed": seed, "prepared": str(prepared_dir)}
    with step_run(project, "train", config, data_hash, tags=tags) as active:
        mlflow.log_params({"data.resolution": data.resolution, "data.classes": ",".join(data.classes),
                           "data.train_images": len(data.y)})
        trainer = make_trainer(**trainer_kwargs, callback=MlflowCallback(out, probe=probe))
        mem = PeakMemory(trainer.device)
        mlflow.log_params({"model.resolution": trainer.spec.resolution, "model.num_classes": trainer.spec.num_classes,
                           "model.params_g": count_params(trainer.G),
                           "model.params_d": count_params(trainer.D) if trainer.D is not None else 0,
                           "data.used_images": len(trainer.data.y), "world_size": trainer.info.world_size,
                           "device.name": device_name(trainer.device), "memory.kind": mem.kind,
                           "precision.resolved": trainer.precision.value,
                           "channels_last.resolved": str(trainer.fmt) == "torch.channels_last"})
        if probe is not None:
            probe.attach(trainer)
        with mem:
            res = trainer.fit()
        if res.resumed_from_step is not None:
            mlflow.set_tag("medsynth.resumed_from_step", str(res.resumed_from_step))
        final = {f"final_{k}": float(v) for k, v in res.metrics.items()}
        fit_s = max(res.seconds - (probe.seconds if probe is not None else 0.0), 1e-9)
        seen = (res.global_step - (res.resumed_from_step or 0)) * cfg.batch_size * trainer.info.world_size
        mlflow.log_metrics(final | mem.metrics() | {
            "train_seconds": time.perf_counter() - t0, "train_fit_seconds": fit_s,
            "train_images_seen": float(seen), "train_images_per_s_overall": seen / fit_s,
            "global_step": float(res.global_step)})
        uri = log_generator_model(out / GENERATOR_FILE, data.resolution,
                                  data.classes if trainer.spec.num_classes else [])
        return _finish(res, out, data, t0, active.info.run_id, uri, main)


def _finish(res: Any, out: Path, data: Any, t0: float, run_id: str | None, uri: str | None,
            main: bool) -> TrainOutcome:

    outcome = TrainOutcome(out, out / GENERATOR_FILE, res.global_step, res.epochs_done, res.resumed_from_step,
                           res.metrics, time.perf_counter() - t0, run_id, uri)
    if main:
        write_json(out / "train_summary.json", {
            "run_id": run_id, "model_uri": uri, "global_step": res.global_step, "epochs": res.epochs_done,
            "resumed_from_step": res.resumed_from_step, "resolution": data.resolution,
            "classes": data.classes, "metrics": res.metrics, "seconds": outcome.seconds,
        })
    return outcome


def resume_note(outcome: TrainOutcome) -> str:
    """What resuming did, for the command's summary line ('' for a fresh run)."""
    if outcome.resumed_from_step is None:
        return ""
    if outcome.resumed_from_step >= outcome.global_step:
        return (f" (the checkpoint in {outcome.out_dir / 'checkpoints'} was already complete: nothing was trained; "
                "delete that folder, or use `medsynth train --no-resume`, to train again)")
    return f" (resumed from step {outcome.resumed_from_step})"


def metrics_of(outcome: TrainOutcome) -> dict[str, float]:
    """The step's DVC metrics."""
    keys = ("loss_d", "loss_g", "d_real", "d_fake", "diversity_ratio", "epoch_images_per_s")
    return {k: round(float(outcome.metrics[k]), 5) for k in keys if k in outcome.metrics} | {
        "global_step": outcome.global_step, "seconds": round(outcome.seconds, 2)}


def import_shipped(project: ProjectConfig, dataset: str, out_dir: str | os.PathLike,
                   prepared_dir: str | os.PathLike) -> TrainOutcome | None:
    """Record a shipped champion (training/zoo/) as a tracked training run, so the normal evaluate ->
    promote steps can register and gate it like any freshly trained model.

    The run carries the zoo's lineage (its build command, steps, the data hash it was trained on)
    and the generator file checked against the manifest's sha256. Whether it becomes champion is
    the gate's decision (its absolute floors apply to a shipped model as to any other). Returns
    None when no shipped model exists for ``dataset`` or when it was trained on other data than
    ``prepared_dir`` holds (a different data hash): then nothing is registered and the caller says why.
    """
    import shutil

    import mlflow

    from medsynth.prepared import PreparedData
    from medsynth.tracking import step_run
    from medsynth.training import zoo_manifest

    if dataset not in zoo_manifest.entries():
        return None
    entry = zoo_manifest.get(dataset)  # sha256-checked
    info = entry.info
    data_hash = PreparedData.load(prepared_dir).data_hash
    if info.get("data_hash") != data_hash:
        return None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(entry.path, out / GENERATOR_FILE)
    t0 = time.perf_counter()
    config = {"model": info.get("model", "cgan"), "arch": info.get("arch", ""), "source": "zoo",
              "zoo.command": info.get("command", ""), "zoo.sha256": entry.sha256,
              "zoo.global_step": info.get("global_step", 0), "zoo.train_run_id": info.get("train_run_id", "")}
    with step_run(project, "train", config, data_hash, tags={"medsynth.zoo": dataset}) as active:
        if (entry.folder / "MODEL_CARD.md").is_file():
            mlflow.log_artifact(str(entry.folder / "MODEL_CARD.md"))
        uri = log_generator_model(out / GENERATOR_FILE, int(info.get("resolution", 64)), list(info.get("classes", [])))
        run_id = active.info.run_id
    outcome = TrainOutcome(out, out / GENERATOR_FILE, int(info.get("global_step", 0)), 0, None, {},
                           time.perf_counter() - t0, run_id, uri)
    write_json(out / "train_summary.json", {
        "run_id": run_id, "model_uri": uri, "global_step": outcome.global_step, "epochs": 0,
        "resumed_from_step": None, "resolution": info.get("resolution"), "classes": info.get("classes", []),
        "metrics": {}, "seconds": outcome.seconds, "source": f"zoo:{dataset}"})
    return outcome

