"""Realistic acquisition changes, used to show (and benchmark) what the drift monitor catches.

Each change maps real uint8 images ``[N, H, W]`` to uint8 images of the same shape, the way a new
scanner, protocol or post-processing would: a different tone curve (gamma), a flatter window
(contrast), more sensor noise, a softer reconstruction kernel (blur), a lower-resolution detector
(downsampled then interpolated back to the same matrix size). ``LADDERS`` lists, per change,
settings of increasing strength; level 0 is the mildest.
"""

from __future__ import annotations

import enum

import numpy as np

from medsynth.imaging import resize_tensor, uint8_from_01, uint8_to_01


class Shift(enum.StrEnum):
    GAMMA = "gamma"
    CONTRAST = "contrast"
    NOISE = "noise"
    BLUR = "blur"
    RESOLUTION = "resolution"


# Settings of increasing strength (the parameter each change takes).
LADDERS: dict[Shift, list[float]] = {
    Shift.GAMMA: [1.02, 1.05, 1.1, 1.25, 1.5],  # exponent of the tone curve
    Shift.CONTRAST: [0.99, 0.97, 0.95, 0.9, 0.8],  # factor on the distance from the image mean
    Shift.NOISE: [0.001, 0.002, 0.005, 0.01, 0.04],  # Gaussian sigma in [0, 1] intensity units
    Shift.BLUR: [0.3, 0.4, 0.5, 0.75, 1.0],  # Gaussian sigma in pixels
    Shift.RESOLUTION: [0.97, 0.9, 0.75, 0.6, 0.5],  # detector resolution as a share of the matrix
}


def apply_shift(images: np.ndarray, kind: Shift | str, value: float, seed: int = 0) -> np.ndarray:
    """Apply one acquisition change to uint8 ``[N, H, W]`` images; returns uint8 of the same shape."""
    kind = Shift(kind)
    x = uint8_to_01(images)
    if x.ndim != 3:
        raise ValueError(f"expected [N, H, W] images, got {x.shape}")
    if kind is Shift.GAMMA:
        y = np.power(x, value)
    elif kind is Shift.CONTRAST:
        m = x.mean(axis=(1, 2), keepdims=True)
        y = m + (x - m) * value
    elif kind is Shift.NOISE:
        y = x + np.random.default_rng(seed).normal(0.0, value, size=x.shape).astype(np.float32)
    elif kind is Shift.BLUR:
        from scipy.ndimage import gaussian_filter

        y = gaussian_filter(x, sigma=(0, value, value), mode="nearest")
    else:  # RESOLUTION
        import torch

        n, h, w = x.shape
        small = resize_tensor(torch.from_numpy(x)[:, None], (max(2, round(h * value)), max(2, round(w * value))))
        y = resize_tensor(small, (h, w))[:, 0].numpy()
    return uint8_from_01(y)
