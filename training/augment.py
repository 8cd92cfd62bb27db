"""DiffAugment (Zhao et al. 2020): differentiable augmentation of real AND fake images before D.

With little data D memorises the training set; augmenting both inputs of D with the same
differentiable transforms (gradients flow back to G) stops that without leaking the augmentations
into G's outputs. Policies: ``brightness``, ``contrast``, ``translation``, ``cutout`` (``color``
means brightness+contrast; saturation is meaningless for 1-channel images).

Random numbers come from an explicit ``torch.Generator`` so a resumed run augments identically.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from medsynth.errors import ConfigError

POLICIES = ("brightness", "contrast", "color", "translation", "cutout")


def check_policy(policy: Sequence[str]) -> None:
    for p in policy:
        if p not in POLICIES:
            raise ConfigError(f"train.diffaugment: unknown policy {p!r}; valid: {', '.join(POLICIES)}")


def _rand(n: int, x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, 1, 1, 1, generator=gen, device=x.device, dtype=torch.float32).to(x.dtype)


def brightness(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    # images live in [-1, 1]: shift by U(-0.5, 0.5) (DiffAugment's value, on a range of 2)
    return x + (_rand(x.shape[0], x, gen) - 0.5)


def contrast(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(x.shape[0], x, gen) + 0.5) + mean


def translation(x: torch.Tensor, gen: torch.Generator | None = None, ratio: float = 0.125) -> torch.Tensor:
    """Shift by up to ``ratio`` of the size, filling with the background value -1 (black)."""
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    tx = torch.randint(-sh, sh + 1, (n, 1, 1), generator=gen, device=x.device)
    ty = torch.randint(-sw, sw + 1, (n, 1, 1), generator=gen, device=x.device)
    gi, gj = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    gi = torch.clamp(gi[None] + tx + 1, 0, h + 1)
    gj = torch.clamp(gj[None] + ty + 1, 0, w + 1)
    padded = F.pad(x, (1, 1, 1, 1), value=-1.0)  # n x c x h+2 x w+2
    idx = (gi * (w + 2) + gj).reshape(n, 1, h * w).expand(-1, x.shape[1], -1)
    return padded.reshape(n, x.shape[1], -1).gather(2, idx).reshape_as(x)


def cutout(x: torch.Tensor, gen: torch.Generator | None = None, ratio: float = 0.5) -> torch.Tensor:
    """Blank one square of ``ratio`` x size per image (set to the background -1)."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ox = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), generator=gen, device=x.device)
    oy = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), generator=gen, device=x.device)
    gi = torch.arange(h, device=x.device)[None, :, None]
    gj = torch.arange(w, device=x.device)[None, None, :]
    inside = ((gi - ox + ch // 2).clamp(0) < ch) & ((gi - ox + ch // 2) >= 0)
    inside = inside & ((gj - oy + cw // 2) >= 0) & ((gj - oy + cw // 2) < cw)  # n x h x w
    keep = (~inside)[:, None].to(x.dtype)
    return x * keep + (-1.0) * (1 - keep)


_FNS = {"brightness": (brightness,), "contrast": (contrast,), "color": (brightness, contrast),
        "translation": (translation,), "cutout": (cutout,)}


def diff_augment(x: torch.Tensor, policy: Sequence[str], gen: torch.Generator | None = None) -> torch.Tensor:
    """Apply the policy's transforms in order (differentiable w.r.t. ``x``)."""
    for p in policy:
        for fn in _FNS[p]:
            x = fn(x, gen)
    return x.contiguous(memory_format=torch.channels_last) if x.is_contiguous(memory_format=torch.channels_last) else x
