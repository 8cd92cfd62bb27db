"""What both training loops share (the GAN :mod:`~medsynth.training.trainer` and the latent
diffusion :mod:`~medsynth.training.diffusion_trainer`): the images they train on, how they report
(:class:`Callback`), their result, per-step seeds, the ``train.max_minutes`` budget and the
diversity check of their sample grids.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from medsynth.imaging import to_unit_tensor
from medsynth.training.models import ModelSpec
from medsynth.training.sampler import diversity


@dataclass
class TrainData:
    """Training images resident in memory as one uint8 tensor (v means v / 127.5 - 1)."""

    x: torch.Tensor  # uint8 [N, 1, R, R]
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
