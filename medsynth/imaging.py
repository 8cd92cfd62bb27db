"""Pixels: [-1, 1] <-> uint8, resizing to a resolution, image grids, the supported resolutions.

Images in medsynth are float32 ``[N, 1, R, R]`` in [-1, 1] (networks, metrics, the app) and uint8
``[N, 1, R, R]`` or ``[N, R, R]`` where they are stored or exported (value ``v`` means
``v / 127.5 - 1``). Every conversion between the two, every resize for a feature extractor or a
judge and every sample grid goes through this module, so rounding and clipping are the same
everywhere:

* float -> uint8: ``rint((x + 1) * 127.5)`` clipped to 0..255 (round half to even, in float32);
* uint8 -> float: ``v / 127.5 - 1`` in float32;
* resize: bilinear, ``align_corners=False``, antialiased when shrinking, then clamped to the
  input's range ([-1, 1] or [0, 1]).

The preprocessing chain (``medsynth/transforms.py``) and the C2ST (``medsynth/c2st.py``) resize
with the same settings.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

# Image sizes the networks (training/models.py) and preprocess support.
RESOLUTIONS = (28, 32, 64)


def to_unit(x_uint8: np.ndarray) -> np.ndarray:
    """uint8 storage -> float32 in [-1, 1]."""
    return x_uint8.astype(np.float32) / 127.5 - 1.0


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


def to_unit_tensor(x_uint8: torch.Tensor) -> torch.Tensor:
    """A uint8 tensor -> float32 in [-1, 1] (the trainer's resident data; same values as :func:`to_unit`)."""
    return x_uint8.float().div_(127.5).sub_(1.0)


def resize_tensor(x: torch.Tensor, r: int, lo: float, hi: float) -> torch.Tensor:
    """``[N, C, H, W]`` -> ``[N, C, r, r]``: bilinear, antialiased when shrinking, clamped to [lo, hi]."""
    import torch.nn.functional as F

    return F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False, antialias=x.shape[-1] > r).clamp(lo, hi)


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
