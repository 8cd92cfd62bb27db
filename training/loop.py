"""What both training loops share (the GAN :mod:`~medsynth.training.trainer` and the latent
diffusion :mod:`~medsynth.training.diffusion_trainer`): the images they train on, how they report
(:class:`Callback`), their result, per-step seeds, the ``train.max_minutes`` budget and the
diversity check of their sample grids.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from medsynth.errors import TrainingError
from medsynth.imaging import to_unit_tensor
from medsynth.training import checkpoint as ckpt
from medsynth.training import distributed as dist_util
from medsynth.training.models import ModelSpec
from medsynth.training.sampler import diversity


@dataclass
class TrainData:
    """Training images, uint8 (v means v / 127.5 - 1), and their labels.

    ``x`` is a tensor, or anything indexed like one that returns tensors (``x[idx]``, ``x[a:b]``,
    ``len(x)``, ``x.shape``): :class:`medsynth.prepared.ImageReader` reads the prepared file on demand.
    """

    x: Any  # uint8 [N, 1, R, R]: torch.Tensor or medsynth.prepared.ImageReader
    y: torch.Tensor  # int64 [N]
    classes: list[str]
    modalities: list[str] = field(default_factory=list)  # per class

    @property
    def resolution(self) -> int:
        return int(self.x.shape[-1])

    def fingerprint(self) -> dict[str, Any]:
        return {"resolution": self.resolution, "classes": list(self.classes)}

    def balanced_subset(self, n: int | None, seed: int) -> TrainData:
        """At most ``n`` images, the same number per class (deterministic in ``seed``)."""
        if not n or n >= len(self.y):
            return self
        g = torch.Generator().manual_seed(seed)
        per = max(1, n // max(len(self.classes), 1))
        keep = []
        for c in torch.unique(self.y).tolist():
            idx = torch.nonzero(self.y == c).flatten()
            keep.append(idx[torch.randperm(len(idx), generator=g)[:per]])
        k = torch.sort(torch.cat(keep)).values
        return TrainData(self.x[k], self.y[k], self.classes, self.modalities)


class Callback(Protocol):
    """How the trainer reports (MLflow in components/train.py; a no-op or a recorder in tests)."""

    def on_step(self, step: int, metrics: dict[str, float]) -> None: ...
    def on_epoch_end(self, epoch: int, metrics: dict[str, float], grid: np.ndarray) -> None: ...


class NullCallback:
    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def on_epoch_end(self, epoch: int, metrics: dict[str, float], grid: np.ndarray) -> None:
        pass


@dataclass
class TrainResult:
    generator: torch.nn.Module  # the EMA generator (or G when EMA is off), on the CPU, eval mode
    spec: ModelSpec
    out_dir: Path
    global_step: int
    epochs_done: int
    resumed_from_step: int | None
    metrics: dict[str, float]
    seconds: float


def step_seed(seed: int, rank: int, step: int) -> int:
    # distinct, deterministic streams per (rank, step); 2**61-1 keeps it in int64
    return (seed * 1_000_003 + rank * 7_919 + step * 104_729) % (2**61 - 1)


class TimeBudget:
    """``train.max_minutes``: once spent, the loop stops after the current step (then saves as at the end)."""

    def __init__(self, minutes: float):
        self.deadline = time.monotonic() + minutes * 60 if minutes else None
        self.spent = False

    def check(self) -> bool:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.spent = True
        return self.spent


def diversity_report(fake: np.ndarray, num_classes: int, data: TrainData, seed: int,
                     collapse_threshold: float) -> dict[str, float]:
    """Diversity of fixed-seed samples (labels cycling over the classes) against real images.

    Per class, because a conditional model that makes one image per class still looks diverse
    over all classes together; ``diversity_ratio`` is the mean of the per-class ratios.
    """
    g = torch.Generator().manual_seed(seed + 54_321)
    n_cls = max(num_classes, 1)
    fake_labels = np.arange(len(fake)) % n_cls if num_classes else np.zeros(len(fake), dtype=int)
    fd, rd = [], []
    for c in range(n_cls):
        f = fake[fake_labels == c]
        pool = torch.nonzero(data.y == c).flatten() if num_classes else torch.arange(len(data.y))
        if len(f) < 2 or len(pool) < 2:
            continue
        idx = pool[torch.randperm(len(pool), generator=g)[: max(len(f), 8)]]
        fd.append(diversity(f))
        rd.append(diversity(to_unit_tensor(data.x[idx])))
    fake_div, real_div = float(np.mean(fd)) if fd else 0.0, float(np.mean(rd)) if rd else 0.0
    ratio = float(np.mean([a / max(b, 1e-8) for a, b in zip(fd, rd, strict=True)])) if fd else 0.0
    return {"diversity_fake": fake_div, "diversity_real": real_div, "diversity_ratio": ratio,
            "diversity_all": diversity(fake), "mode_collapse": float(ratio < collapse_threshold)}


class LoopBase(ABC):
    """What both trainers set up and do alike: paths, the process group, precision and threads, the
    (class-balanced) data, the per-rank sampler, saving a snapshot, the run settings a resume must
    match, and :meth:`fit` restoring the thread count. A subclass builds its networks and steps."""

    def _setup(self, cfg: Any, data: TrainData, out_dir: str | Path, seed: int, callback: Callback | None,
               resume: bool) -> None:
        from medsynth.training.kinds import get_kind
        from medsynth.training.train_config import resolve_precision

        self.cfg, self.seed, self.resume = cfg, seed, resume
        self.out_dir = Path(out_dir)
        self.ckpt_path = self.out_dir / "checkpoints" / ckpt.LAST
        self.callback = callback or NullCallback()
        self.kind = get_kind(cfg.model)
        self.info = dist_util.init_distributed(cfg.device.value)
        self.device = self.info.device
        self._check_precision(cfg)
        self._threads_before = torch.get_num_threads()
        self.precision = resolve_precision(cfg.precision, self.device.type)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)  # restored when fit() returns
        self.data = data.balanced_subset(cfg.max_train_images, seed)
        self.classes = self.data.classes if self.kind.conditional else []
        mods = sorted(set(self.data.modalities))
        # which modality each class belongs to, when the classes span several (else none)
        self.class_modality = [mods.index(m) for m in self.data.modalities] if self.classes and len(mods) > 1 else []
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.resumed_from: int | None = None

    @abstractmethod
    def _check_precision(self, cfg: Any) -> None:
        """Refuse or warn about a precision this trainer cannot use on this device."""

    def _check_labels(self) -> None:
        if self.kind.conditional and int(self.data.y.max()) >= len(self.classes):
            raise TrainingError(f"labels: {int(self.data.y.max())} is out of range for {len(self.classes)} classes")

    def _make_sampler(self) -> None:
        """The shuffled per-rank order of the training images (seeded; ``set_epoch`` each epoch)."""
        from torch.utils.data import DistributedSampler

        self.sampler = DistributedSampler(range(len(self.data.y)), num_replicas=self.info.world_size,
                                          rank=self.info.rank, shuffle=True, seed=self.seed, drop_last=True)
        self.steps_per_epoch = len(self.sampler) // self.cfg.batch_size
        if self.steps_per_epoch < 1:
            raise TrainingError(f"train.batch_size: {self.cfg.batch_size} is larger than the {len(self.sampler)} "
                                "images each process gets; lower it")

    @abstractmethod
    def snapshot(self) -> dict[str, Any]: ...

    def save(self) -> None:
        if self.info.is_main:
            ckpt.save(self.ckpt_path, self.snapshot())
        dist_util.barrier(self.info)

    def _check_run_settings(self, snap: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
        """A snapshot resumes only a run with its seed, world size and batch size (and ``extra``)."""
        want = {"seed": self.seed, "world_size": self.info.world_size, "batch_size": self.cfg.batch_size, **(extra or {})}
        for key, value in want.items():
            if snap.get(key) != value:
                raise TrainingError(f"{self.ckpt_path}: checkpoint has {key}={snap.get(key)} but this run has "
                                    f"{key}={value}; resume with the same settings or use another --out folder")

    def _finish(self, net: torch.nn.Module, metrics: dict[str, float], t_start: float) -> TrainResult:
        """Write the served model (``generator.pt``, atomically, on the main process) and return the result."""
        from medsynth.fileio import atomic_path
        from medsynth.generator import GENERATOR_FILE
        from medsynth.training.sampler import generator_payload

        if self.info.is_main:
            with atomic_path(self.out_dir / GENERATOR_FILE) as tmp:
                cond = bool(self.spec.num_classes)
                torch.save(generator_payload(net, self.data.classes if cond else [],
                                             self.data.modalities if cond else [],
                                             {"global_step": self.global_step, "seed": self.seed}), tmp)
        dist_util.barrier(self.info)
        return TrainResult(net, self.spec, self.out_dir, self.global_step, self.epoch, self.resumed_from,
                           metrics, time.perf_counter() - t_start)

    def fit(self) -> TrainResult:
        """Train (resuming from the last snapshot when there is one) and write generator.pt."""
        try:
            return self._fit()
        finally:
            torch.set_num_threads(self._threads_before)

    @abstractmethod
    def _fit(self) -> TrainResult: ...
