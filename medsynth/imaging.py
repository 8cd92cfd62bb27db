"""Pixels: every value conversion and every image resize, image grids, the supported resolutions.

Images in medsynth are float32 ``[N, 1, R, R]`` in [-1, 1] (networks, metrics, the app) and uint8
``[N, 1, R, R]`` or ``[N, R, R]`` where they are stored or exported (value ``v`` means
``v / 127.5 - 1``). Every conversion between the two (and through [0, 1], the preprocessing chain's
and the acquisition shifts' working range), every resize of images (preprocessing, a feature
extractor's or a judge's resolution, the gate's coarse view, the C2ST, the latent diffusion's
coarse latent) and every sample grid goes through this module, so rounding and clipping are the
same everywhere:

* float -> uint8: ``rint((x + 1) * 127.5)`` clipped to 0..255 (round half to even, in float32);
* uint8 -> float: ``v / 127.5 - 1`` in float32; grey levels kept continuous (:func:`unit_to_grey`,
  :func:`grey_to_unit`) where a disturbance must not re-quantise;
* [0, 1] <-> uint8: ``v / 255`` and ``rint(x * 255)`` clipped; [0, 1] <-> [-1, 1]: ``2x - 1``,
  ``(x + 1) / 2``;
* resize: bilinear, ``align_corners=False``, antialiased when shrinking, then (optionally) clamped to
  the input's range; area pooling (:func:`pool_tensor`) for the diversity statistic.

Up- and downsampling *inside* a network (residual blocks, the judge's pyramid, the super-resolver's
layers) is part of that network's architecture and lives with it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

# Image sizes the networks (training/models.py) and preprocess support.
RESOLUTIONS = (28, 32, 64)


def grey_to_unit(g: np.ndarray) -> np.ndarray:
    """Grey levels 0..255 (any float dtype, not rounded) -> [-1, 1] in the same dtype."""
    return np.asarray(g) / 127.5 - 1.0


def unit_to_grey(x: np.ndarray) -> np.ndarray:
    """[-1, 1] -> continuous grey levels 0..255 in float64 (no rounding, no clipping)."""
    return (np.asarray(x, dtype=np.float64) + 1.0) * 127.5


def grey_to_uint8(g: np.ndarray) -> np.ndarray:
    """Continuous grey levels -> uint8 (``rint``, clipped to 0..255): what saving as 8-bit does."""
    return np.clip(np.rint(g), 0, 255).astype(np.uint8)


def to_unit(x_uint8: np.ndarray) -> np.ndarray:
    """uint8 storage -> float32 in [-1, 1]."""
    return grey_to_unit(x_uint8.astype(np.float32))


def to_uint8(x_unit: np.ndarray) -> np.ndarray:
    """float in [-1, 1] -> uint8 storage of the same shape (clipped, rounded)."""
    return np.clip(np.rint((np.asarray(x_unit, dtype=np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def uint8_frames(images: np.ndarray) -> np.ndarray:
    """Float images ``[n, 1, R, R]`` (or ``[n, R, R]``) in [-1, 1] -> uint8 ``[n, R, R]`` (export).

    Raises:
        ValueError: any other shape.
    """
    x = np.asarray(images, dtype=np.float32)
    if x.ndim == 4:
        x = x[:, 0]
    if x.ndim != 3:
        raise ValueError(f"images: expected [n, 1, R, R] or [n, R, R], got shape {x.shape}")
    return to_uint8(x)


def uint8_to_01(a: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1] (``v / 255``)."""
    return np.asarray(a).astype(np.float32) / 255.0


def uint8_tensor_to_01(a: torch.Tensor) -> torch.Tensor:
    """A uint8 tensor -> float32 in [0, 1] (same values as :func:`uint8_to_01`)."""
    return a.float().div_(255.0)


def from_01(x01: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """[0, 1] -> [-1, 1]."""
    return x01 * 2.0 - 1.0


def to_01(x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """[-1, 1] -> [0, 1]."""
    return (x + 1.0) / 2.0


def uint8_from_01(x01: np.ndarray) -> np.ndarray:
    """float in [0, 1] -> uint8 (``rint(x * 255)``, clipped)."""
    return grey_to_uint8(x01 * 255.0)


def tensor_01(x: np.ndarray) -> torch.Tensor:
    """Images in [-1, 1] (any array) -> a float32 tensor in [0, 1] (what torchmetrics' image metrics take)."""
    import torch

    return to_01(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))


def uint8_tensor_from_01(x01: torch.Tensor) -> torch.Tensor:
    """A float tensor in [0, 1] -> uint8 (clamped, rounded): what torch-fidelity's Inception takes."""
    import torch

    return (x01.clamp(0, 1) * 255).round().to(torch.uint8)


def to_unit_tensor(x_uint8: torch.Tensor) -> torch.Tensor:
    """A uint8 tensor -> float32 in [-1, 1] (the trainer's resident data; same values as :func:`to_unit`)."""
    return x_uint8.float().div_(127.5).sub_(1.0)


def resize_tensor(x: torch.Tensor, size: int | tuple[int, int], lo: float | None = None,
                  hi: float | None = None) -> torch.Tensor:
    """``[N, C, H, W]`` -> ``[N, C, h, w]`` (``size`` r means r x r): bilinear, ``align_corners=False``,
    antialiased when shrinking, clamped to [lo, hi] when they are given."""
    import torch.nn.functional as F

    h, w = (size, size) if isinstance(size, int) else size
    y = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False,
                      antialias=x.shape[-2] > h or x.shape[-1] > w)
    return y if lo is None and hi is None else y.clamp(lo, hi)


def resize_images(x: np.ndarray, r: int) -> torch.Tensor:
    """Images ``[N, 1, R, R]`` in [-1, 1] as a float32 tensor at ``r`` px (unchanged when already ``r``)."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if t.shape[-1] != r or t.shape[-2] != r:
        t = resize_tensor(t, r, -1.0, 1.0)
    return t


def pool_tensor(x: torch.Tensor, size: int) -> torch.Tensor:
    """``[N, C, H, W]`` area-averaged down to ``size`` x ``size`` (unchanged when not larger)."""
    import torch.nn.functional as F

    return F.adaptive_avg_pool2d(x, size) if x.shape[-1] > size else x


def to_res(x: np.ndarray, r: int) -> np.ndarray:
    """Images ``[N, 1, R, R]`` in [-1, 1] resized to ``r`` px (a judge's or extractor's resolution).

    Returned unchanged when they already have ``r`` columns.
    """
    if x.shape[-1] == r:
        return x
    import torch

    return resize_tensor(torch.from_numpy(x), r, -1.0, 1.0).numpy()


def coarse_view(x: np.ndarray, px: int) -> np.ndarray:
    """Images ``[N, 1, R, R]`` brought down to ``px`` (antialiased) and back up to ``R`` (bilinear).

    What survives is anatomy, layout and modes; pixel texture (8-bit grain, a slight blur, faint
    noise) does not. The gate's coarse scores compare both sets through this same view. Images not
    larger than ``px`` are returned unchanged.
    """
    if x.shape[-1] <= px:
        return x
    return to_res(to_res(x, px), x.shape[-1])


def make_grid(images: np.ndarray, cols: int | None = None, pad: int = 2, fill: int = 0, scale: int = 1) -> np.ndarray:
    """``[n, 1, R, R]`` in [-1, 1] -> one uint8 ``[H, W]`` mosaic.

    Args:
        cols: images per row; None: a square-ish grid (``ceil(sqrt(n))``).
        pad: pixels between images and around the edge, filled with ``fill`` (0 black, 255 white).
        scale: each pixel repeated ``scale x scale`` (small images stay visible in a report).
    """
    n, r = len(images), images.shape[-1]
    cols = math.ceil(math.sqrt(n)) if cols is None else cols
    rows = math.ceil(n / cols)
    out = np.full((rows * (r + pad) + pad, cols * (r + pad) + pad), fill, np.uint8)
    for i, im in enumerate(to_uint8(images[:, 0])):
        y, x = pad + (i // cols) * (r + pad), pad + (i % cols) * (r + pad)
        out[y : y + r, x : x + r] = im
    return np.kron(out, np.ones((scale, scale), np.uint8)) if scale > 1 else out
