"""One named transform chain shared by preprocess, evaluate, the drift monitor and the app.

``ImageTransform`` turns any stored 2D image (uint8, uint16 MR, float HU CT, ...) into a float32
``R x R`` image in [-1, 1], in named steps (as MONAI's ``ScaleIntensityRanged(clip=True)`` chains):

1. ``to_unit_range``: intensities to [0, 1] -- CT in Hounsfield units through a window
   (centre/width, clipped); 8-bit images divided by 255; anything else by robust percentiles.
2. ``square``: pad the short side symmetrically (keeps anatomy undistorted) or centre-crop.
3. ``resize``: antialiased bilinear resize to the target resolution (``imaging.resize_tensor``), or
   zero-pad when the image is smaller and ``upscale`` is off (e.g. 28 px MedMNIST -> 32 px).
4. ``to_signed``: [0, 1] -> [-1, 1].

Reference and current data pass through identical code, so drift and FID see the same pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from medsynth.imaging import from_01, resize_tensor, uint8_tensor_to_01, uint8_to_01


@dataclass(frozen=True)
class ImageTransform:
    """The chain's settings. ``window`` is (centre, width) in HU for CT images in HU."""

    resolution: int = 64
    window: tuple[float, float] = (40.0, 400.0)
    square_mode: str = "pad"  # pad | crop
    upscale: bool = True  # False: a smaller image is zero-padded (centred) instead of enlarged
    percentiles: tuple[float, float] = (0.5, 99.5)

    def to_unit_range(self, img: np.ndarray, units: str = "raw") -> np.ndarray:
        a = np.asarray(img)
        if units == "HU":
            c, w = self.window
            lo, hi = c - w / 2.0, c + w / 2.0
            return np.clip((a.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0)
        if a.dtype == np.uint8:
            return uint8_to_01(a)
        f = a.astype(np.float32)
        if np.issubdtype(a.dtype, np.floating) and np.nanmin(f) >= 0.0 and np.nanmax(f) <= 1.0:
            return np.nan_to_num(f, nan=0.0)
        lo, hi = np.nanpercentile(f, self.percentiles)
        if not np.isfinite(hi - lo) or hi - lo < 1e-6:
            return np.zeros_like(f)
        return np.clip((np.nan_to_num(f, nan=lo) - lo) / (hi - lo), 0.0, 1.0)

    def square(self, img: np.ndarray) -> np.ndarray:
        h, w = img.shape
        if h == w:
            return img
        if self.square_mode == "crop":
            s = min(h, w)
            top, left = (h - s) // 2, (w - s) // 2
            return img[top : top + s, left : left + s]
        s = max(h, w)
        out = np.zeros((s, s), dtype=img.dtype)
        top, left = (s - h) // 2, (s - w) // 2
        out[top : top + h, left : left + w] = img
        return out

    def resize(self, img: np.ndarray) -> np.ndarray:
        r = self.resolution
        s = img.shape[0]
        if s == r:
            return img.astype(np.float32, copy=False)
        if s < r and not self.upscale:
            out = np.zeros((r, r), dtype=np.float32)
            o = (r - s) // 2
            out[o : o + s, o : o + s] = img
            return out
        t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None, None]
        return resize_tensor(t, r, 0.0, 1.0)[0, 0].numpy()

    @staticmethod
    def to_signed(img: np.ndarray) -> np.ndarray:
        return from_01(img)

    def __call__(self, img: np.ndarray, units: str = "raw") -> np.ndarray:
        """Apply the whole chain to one 2D image; returns float32 [R, R] in [-1, 1]."""
        a = np.asarray(img)
        if a.ndim != 2:
            raise ValueError(f"expected a 2D image, got shape {a.shape}")
        x = self.to_unit_range(a, units)
        x = self.square(x)
        x = self.resize(x)
        return self.to_signed(x).astype(np.float32, copy=False)

    def batch_uint8(self, images: np.ndarray) -> np.ndarray:
        """Fast path for a stack of equal-size uint8 images [N, H, W] -> float32 [N, 1, R, R]."""
        a = np.asarray(images)
        if a.ndim != 3 or a.dtype != np.uint8:
            raise ValueError(f"expected uint8 [N, H, W], got {a.dtype} {a.shape}")
        n, h, w = a.shape
        x = uint8_tensor_to_01(torch.from_numpy(a))[:, None]
        if h != w:
            return np.stack([self(im) for im in a])[:, None]
        r = self.resolution
        if h != r:
            if h < r and not self.upscale:
                o = (r - h) // 2
                x = F.pad(x, (o, r - h - o, o, r - h - o))
            else:
                x = resize_tensor(x, r, 0.0, 1.0)
        return from_01(x).numpy()
