"""Making images from a trained generator: the :class:`~medsynth.generator.ImageGenerator` of a
GAN and the diversity statistic used to spot mode collapse (sample grids: ``medsynth.imaging``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from medsynth.errors import ConfigError
from medsynth.imaging import pool_tensor
from medsynth.training.models import Generator, ModelSpec

DIFFUSION_KINDS = ("ldm",)  # model kinds whose files hold a LatentDiffusion (training/diffusion.py)
MAX_IMAGES = 10_000  # one generate() call makes at most this many images (bounds memory)
CHUNK = 256


class SamplerBase:
    """What every served model shares: the label rules (``spec.num_classes`` and ``classes`` set by the subclass)."""

    spec: Any
    classes: list[str]

    def check_labels(self, n: int, labels: Sequence[int] | np.ndarray | None) -> torch.Tensor | None:
        return check_labels(self.spec.num_classes, self.classes, n, labels)

    def label_index(self, name: str) -> int:
        return label_index(self.classes, name)


class GANSampler(SamplerBase):
    """A trained (EMA) generator behind the ImageGenerator protocol.

    Same seed -> same images: z comes from a ``torch.Generator`` seeded with ``seed``. ``bf16``
    runs G under bfloat16 autocast (useful on CPUs with AVX-512 BF16/AMX; slower without).
    """

    def __init__(self, generator: Generator, classes: Sequence[str] = (), bf16: bool = False,
                 device: str | torch.device = "cpu"):
        self.net = generator.eval().to(device)
        self.spec: ModelSpec = generator.spec
        self.resolution = self.spec.resolution
        self.classes = list(classes) if self.spec.num_classes else []
        self.bf16 = bf16
        self.device = torch.device(device)

    @torch.no_grad()
    def generate(self, n: int, seed: int, labels: Sequence[int] | np.ndarray | None = None,
                 truncation: float = 1.0) -> np.ndarray:
        """``n`` float32 images [n, 1, R, R] in [-1, 1]; ``truncation`` < 1 scales z towards 0."""
        check_request(n, truncation)
        y = self.check_labels(int(n), labels)
        gen = torch.Generator().manual_seed(int(seed))
        z = torch.randn(int(n), self.spec.nz, generator=gen) * truncation
        out = []
        for i in range(0, int(n), CHUNK):
            zb = z[i : i + CHUNK].to(self.device)
            yb = y[i : i + CHUNK].to(self.device) if y is not None else None
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                out.append(self.net(zb, yb).float().clamp_(-1, 1).cpu())
        return torch.cat(out).numpy()


def check_request(n: int, truncation: float) -> None:
    """Bounds of one generate() call (any model kind).

    Raises:
        ConfigError: a count outside 1..MAX_IMAGES or a truncation outside (0, 1].
    """
    if not 0 < int(n) <= MAX_IMAGES:
        raise ConfigError(f"count: must be in 1..{MAX_IMAGES}, got {n}")
    if not 0.0 < truncation <= 1.0:
        raise ConfigError(f"truncation: must be in (0, 1], got {truncation}")


def check_labels(num_classes: int, classes: Sequence[str], n: int,
                 labels: Sequence[int] | np.ndarray | None) -> torch.Tensor | None:
    """Labels as a tensor (cycled over the classes when not given for a conditional model).

    Raises:
        ConfigError: labels for an unconditional model, wrong length, or out of range.
    """
    c = num_classes
    if labels is None:
        return torch.arange(n) % c if c else None
    if not c:
        raise ConfigError("labels: this generator is unconditional; leave labels out")
    lab = np.asarray(labels).reshape(-1)
    if lab.shape[0] != n:
        raise ConfigError(f"labels: expected {n} labels (one per image), got {lab.shape[0]}")
    if not np.issubdtype(lab.dtype, np.integer):
        raise ConfigError(f"labels: expected integers, got {lab.dtype}")
    bad = lab[(lab < 0) | (lab >= c)]
    if bad.size:
        raise ConfigError(f"labels: {int(bad[0])} is out of range; valid: 0..{c - 1} ({', '.join(classes)})")
    return torch.from_numpy(lab.astype(np.int64))


def label_index(classes: Sequence[str], name: str) -> int:
    """Index of a class by name (e.g. ``AbdomenCT``); case-insensitive, suffix match for ``CT/...``."""
    key = name.lower()
    for i, c in enumerate(c.lower() for c in classes):
        if c == key or c.split("/")[-1] == key:
            return i
    raise ConfigError(f"label {name!r}: unknown class; valid: {', '.join(classes)}")


def slerp(a: torch.Tensor, b: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` points on the spherical path from latent ``a`` to ``b`` (float64 inside, float32 out).

    Slerp keeps the path at the typical norm of Gaussian latents (a straight line passes through
    low-norm, washed-out images in the middle); the end points are exactly ``a`` and ``b``.
    """
    shape = a.shape
    a, b = a.double().flatten(), b.double().flatten()
    t = torch.linspace(0, 1, steps, dtype=torch.float64)[:, None]
    cos = torch.clamp((a @ b) / (a.norm() * b.norm()), -1.0, 1.0)
    omega = torch.arccos(cos)
    if float(omega) < 1e-6:
        z = (1 - t) * a + t * b
    else:
        z = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)
    return z.float().reshape(steps, *shape)


def generator_payload(net: Generator, classes: Sequence[str], modalities: Sequence[str],
                      extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a served generator file holds: spec, weights, class names (tensors + plain types)."""
    return {"format": 1, "model_spec": net.spec.to_dict(), "state_dict": net.state_dict(),
            "classes": list(classes), "modalities": list(modalities), "extra": dict(extra or {})}


def diversity(images: torch.Tensor | np.ndarray, size: int = 16) -> float:
    """Mean pairwise L2 distance between images pooled to ``size`` px (per pixel, RMS).

    Divided by the same statistic of real images this is the mode-collapse signal: a collapsed
    generator makes near-identical images and its ratio falls towards 0.
    """
    x = torch.as_tensor(images, dtype=torch.float32)
    x = pool_tensor(x, size)
    flat = x.flatten(1)
    if flat.shape[0] < 2:
        return 0.0
    d = torch.cdist(flat, flat)  # n x n
    n = flat.shape[0]
    return float(d.sum() / (n * (n - 1)) / math.sqrt(flat.shape[1]))
