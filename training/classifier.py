"""A small CNN image classifier: the domain feature extractor and the utility-experiment model.

Pure ML (no MLflow, no files): ``train_classifier`` fits a :class:`SmallCNN` on float32 images
``[N, 1, R, R]`` in [-1, 1] and integer labels; ``predict_proba`` scores images; ``features``
gives the penultimate-layer embedding that FID-domain / KID-domain / PRDC use.

The network is deliberately small (~60k parameters at width 16) so that it trains in well under a minute on
two CPU cores; it is a feature space for *comparing* image sets, not a diagnostic model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn


class SmallCNN(nn.Module):
    """Four stride-2 conv blocks (BatchNorm, ReLU), global average pool, a linear feature layer and a linear head.

    Works at any resolution >= 16 (global pooling); trained at 64 px for the domain extractor.
    """

    def __init__(self, num_classes: int, feature_dim: int = 128, width: int = 16) -> None:
        super().__init__()
        if num_classes < 1 or feature_dim < 2 or width < 4:
            raise ValueError(f"bad SmallCNN sizes: classes={num_classes}, feature_dim={feature_dim}, width={width}")
        self.num_classes = num_classes
        self.feature_dim = feature_dim
        self.width = width
        w = width

        def block(cin: int, cout: int) -> nn.Sequential:
            # one stride-2 conv per block: the net must train in seconds on two CPU cores
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            )

        self.trunk = nn.Sequential(
            block(1, w),  # w x R/2 x R/2
            block(w, 2 * w),  # 2w x R/4 x R/4
            block(2 * w, 4 * w),  # 4w x R/8 x R/8
            block(4 * w, 8 * w),  # 8w x R/16 x R/16
            nn.AdaptiveAvgPool2d(1),  # 8w x 1 x 1
            nn.Flatten(),  # 8w
            nn.Linear(8 * w, feature_dim),  # feature_dim
            nn.ReLU(inplace=True),
        )
        self.head = nn.Linear(feature_dim, num_classes)  # num_classes

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate embedding ``[N, feature_dim]`` of images ``[N, 1, R, R]`` in [-1, 1]."""
        return self.trunk(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))  # logits [N, num_classes]

    def spec(self) -> dict[str, int]:
        """Constructor arguments, saved beside the weights so the net can be rebuilt."""
        return {"num_classes": self.num_classes, "feature_dim": self.feature_dim, "width": self.width}


@dataclass(frozen=True)
class TrainSettings:
    """How a classifier is fitted (bounded: these come from params.yaml)."""

    epochs: int = 3
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    feature_dim: int = 128
    width: int = 16
    seed: int = 0
    augment: bool = True  # random flips and 1-pixel shifts

    def check(self) -> None:
        if not 1 <= self.epochs <= 200:
            raise ValueError(f"epochs must be in 1..200, got {self.epochs}")
        if not 1 <= self.batch_size <= 4096:
            raise ValueError(f"batch_size must be in 1..4096, got {self.batch_size}")
        if not 0 < self.lr < 1:
            raise ValueError(f"lr must be in (0, 1), got {self.lr}")


@dataclass
class TrainHistory:
    loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    seconds: float = 0.0


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    # Flips and small shifts only: they keep anatomy plausible and make the features less
    # sensitive to exact pixel placement (a feature space should not be a copy detector).
    if torch.rand(1, generator=gen).item() < 0.5:
        x = x.flip(-1)
    dx, dy = (int(v) for v in torch.randint(-1, 2, (2,), generator=gen))
    return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))


def train_classifier(
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    settings: TrainSettings = TrainSettings(),
    on_epoch: Callable[[int, float, float], None] | None = None,
    init: SmallCNN | None = None,
) -> tuple[SmallCNN, TrainHistory]:
    """Fit a :class:`SmallCNN` on ``x`` float32 ``[N, 1, R, R]`` in [-1, 1] and labels ``y`` ``[N]``.

    Args:
        on_epoch: called as ``on_epoch(epoch, loss, train_acc)`` after each epoch (progress/logging).
        init: start from a copy of this model's weights (fine-tuning); its shape must match
            ``num_classes`` and the settings' ``feature_dim``/``width``. It is left unchanged.

    Returns:
        The model in eval mode and the per-epoch history.

    Raises:
        ValueError: shapes do not match, labels out of range, or fewer than two images.
    """
    import time

    settings.check()
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64).reshape(-1)
    if x.ndim != 4 or x.shape[1] != 1 or x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise ValueError(f"expected images [N,1,R,R] and N labels (N >= 2), got {x.shape} and {y.shape}")
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"labels must be in 0..{num_classes - 1}, got {y.min()}..{y.max()}")
    t0 = time.perf_counter()
    torch.manual_seed(settings.seed)
    gen = torch.Generator().manual_seed(settings.seed)
    model = SmallCNN(num_classes, settings.feature_dim, settings.width)
    if init is not None:
        if init.spec() != model.spec():
            raise ValueError(f"init: model {init.spec()} does not match {model.spec()}")
        model.load_state_dict(init.state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    steps = settings.epochs * int(np.ceil(len(x) / settings.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=settings.lr, total_steps=steps)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    hist = TrainHistory()
    for epoch in range(settings.epochs):
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        tot_loss, correct = 0.0, 0
        for i in range(0, len(perm), settings.batch_size):
            idx = perm[i : i + settings.batch_size]
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            xb, yb = xt[idx], yt[idx]
            if settings.augment:
                xb = _augment(xb, gen)
            logits = model(xb)
            loss = nn.functional.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot_loss += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
        hist.loss.append(tot_loss / len(xt))
        hist.train_acc.append(correct / len(xt))
        if on_epoch is not None:
            on_epoch(epoch, hist.loss[-1], hist.train_acc[-1])
    _recalibrate_batchnorm(model, xt, settings.batch_size)
    model.eval()
    hist.seconds = time.perf_counter() - t0
    return model, hist


@torch.no_grad()
def _recalibrate_batchnorm(model: nn.Module, x: torch.Tensor, batch_size: int, limit: int = 4096) -> None:
    # Short fits (a few dozen steps) leave BatchNorm's running averages far from the final
    # weights' statistics, and eval-mode predictions collapse to one class. Re-estimate them
    # with a cumulative average over (up to ``limit``) training images with the final weights.
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    # shuffled: BatchNorm averages per-batch variances, so class-sorted batches would miss the
    # between-class part of the variance
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:limit]
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        if len(idx) >= 2:
            model(x[idx])
    for bn in bns:
        bn.momentum = 0.1


@torch.no_grad()
def predict_proba(model: SmallCNN, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Class probabilities ``[N, num_classes]`` for images ``[N, 1, R, R]`` in [-1, 1]."""
    model.eval()
    out = [
        torch.softmax(model(torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size], dtype=np.float32))), 1)
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(out).numpy() if out else np.zeros((0, model.num_classes), np.float32)


@torch.no_grad()
def embed(model: SmallCNN, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Penultimate features ``[N, feature_dim]`` for images ``[N, 1, R, R]`` in [-1, 1]."""
    model.eval()
    out = [
        model.features(torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size], dtype=np.float32)))
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(out).numpy() if out else np.zeros((0, model.feature_dim), np.float32)


