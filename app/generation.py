"""Generation helpers behind the app's controls: bounded inputs, labels, latent interpolation, display.

Pure functions over an :class:`~medsynth.generator.ImageGenerator`, so the Streamlit page only
lays things out and the logic is testable without a browser.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medsynth.errors import InputError
from medsynth.generator import ImageGenerator

MIX = -1  # "every class in turn"
_MODALITY_WORDS = {"CT": "CT", "MR": "MRI", "MRI": "MRI", "XR": "X-ray", "CXR": "chest X-ray", "DX": "X-ray"}


@dataclass(frozen=True)
class Request:
    """One validated Generate request."""

    count: int
    seed: int
    class_index: int  # MIX or a class index
    truncation: float
    interpolate: bool = False
    seed_b: int = 0
    steps: int = 8


def check_request(req: Request, max_count: int, max_seed: int, max_steps: int, min_truncation: float,
                  num_classes: int) -> None:
    """Every user-controlled size bounded, with a message that says the valid range.

    Raises:
        InputError: a value out of range.
    """
    n = req.steps if req.interpolate else req.count
    if req.interpolate and not 2 <= req.steps <= max_steps:
        raise InputError(f"Interpolation steps {req.steps} is out of range: choose 2..{max_steps}.")
    if not req.interpolate and not 1 <= n <= max_count:
        raise InputError(f"Count {req.count} is out of range: choose 1..{max_count} images.")
    for name, s in (("Seed", req.seed), ("Second seed", req.seed_b)):
        if not 0 <= s <= max_seed:
            raise InputError(f"{name} {s} is out of range: choose 0..{max_seed}.")
    if not min_truncation <= req.truncation <= 1.0:
        raise InputError(f"Truncation {req.truncation} is out of range: choose {min_truncation}..1.0.")
    if req.class_index != MIX and not 0 <= req.class_index < max(num_classes, 0):
        raise InputError(f"Class {req.class_index} is out of range for a model with {num_classes} classes.")


def parse_whole(text: str | int, name: str, lo: int, hi: int) -> int:
    """A number typed into a text box (a seed) as an int in ``lo..hi``; any other entry gets the range.

    Text, not a number widget: browsers hold numbers as doubles, so a seed above 2**53 would be
    rounded (or kept on screen while the previous value is used). Here what is typed is what is used.

    Raises:
        InputError: not a whole number, or out of range (the message gives the range).
    """
    s = str(text).strip()
    if not s:
        raise InputError(f"{name} is empty: choose {lo}..{hi}.")
    if not re.fullmatch(r"[+-]?\d+", s):
        raise InputError(f"{name} {s[:40]!r} is not a whole number: choose {lo}..{hi}.")
    v = int(s)
    if not lo <= v <= hi:
        shown = s.lstrip("+") if len(s) <= 40 else s[:37] + "..."
        raise InputError(f"{name} {shown} is out of range: choose {lo}..{hi}.")
    return v


def labels_for(n: int, class_index: int, num_classes: int) -> np.ndarray | None:
    """Labels for ``n`` images: one class, every class in turn (MIX), or None (unconditional)."""
    if num_classes == 0:
        return None
    if class_index == MIX:
        return np.arange(n, dtype=np.int64) % num_classes
    return np.full(n, class_index, dtype=np.int64)


def generate(gen: ImageGenerator, req: Request) -> tuple[np.ndarray, np.ndarray | None]:
    """Images ``[n,1,R,R]`` in [-1, 1] and their labels for a checked request."""
    nc = len(gen.classes)
    if req.interpolate:
        label = None if nc == 0 else (0 if req.class_index == MIX else req.class_index)
        return interpolate(gen, req.seed, req.seed_b, req.steps, label, req.truncation), \
            (None if label is None else np.full(req.steps, label, dtype=np.int64))
    labels = labels_for(req.count, req.class_index, nc)
    return gen.generate(req.count, req.seed, labels=labels, truncation=req.truncation), labels


def supports_interpolation(gen: ImageGenerator) -> bool:
    return hasattr(gen, "interpolate") or (hasattr(gen, "net") and hasattr(gen, "spec"))


def interpolate(gen: ImageGenerator, seed_a: int, seed_b: int, steps: int, label: int | None,
                truncation: float = 1.0) -> np.ndarray:
    """``steps`` images along a spherical path between the latents of ``seed_a`` and ``seed_b``.

    The end points are exactly ``gen.generate(1, seed_a)`` and ``gen.generate(1, seed_b)``: the
    latent of a seed is the first row of ``randn(n, nz)`` from a generator seeded with it, as in
    the sampler. Slerp keeps the path at the typical norm of Gaussian latents (a straight line
    passes through low-norm, washed-out images in the middle).

    Raises:
        InputError: the generator does not expose its latent space.
    """
    if hasattr(gen, "interpolate"):
        return gen.interpolate(seed_a, seed_b, steps, label=label, truncation=truncation)
    if not supports_interpolation(gen):
        raise InputError("This model does not expose its latent space: interpolation is not available.")
    import torch

    from medsynth.training.sampler import slerp

    nz = int(gen.spec.nz)
    za = torch.randn(1, nz, generator=torch.Generator().manual_seed(int(seed_a)))[0]
    zb = torch.randn(1, nz, generator=torch.Generator().manual_seed(int(seed_b)))[0]
    z = slerp(za, zb, steps)
    z = (z * truncation).float()
    y = None if label is None else torch.full((steps,), int(label), dtype=torch.long)
    dev = getattr(gen, "device", torch.device("cpu"))
    with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bool(getattr(gen, "bf16", False))):
        out = gen.net(z.to(dev), None if y is None else y.to(dev))
    return out.float().clamp_(-1, 1).cpu().numpy()


def human_class_name(name: str, modality: str = "") -> str:
    """``AbdomenCT`` -> ``abdomen CT``; ``XR/PediatricPneumonia`` -> ``pediatric pneumonia X-ray``."""
    mod, _, base = name.rpartition("/")
    mod = mod or modality
    words = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", base).split()
    tail = words[-1] if words else base
    if tail.upper() in _MODALITY_WORDS:
        return " ".join([*(w.lower() for w in words[:-1]), _MODALITY_WORDS[tail.upper()]]).strip()
    suffix = _MODALITY_WORDS.get(mod.upper(), mod)
    return " ".join([*(w.lower() for w in words), suffix]).strip()


def enlarge(img: np.ndarray, px: int) -> np.ndarray:
    """Nearest-neighbour enlargement of a uint8 ``[R, R]`` image to about ``px`` (crisp pixels, no blur)."""
    k = max(1, round(px / img.shape[0]))
    return np.repeat(np.repeat(img, k, axis=0), k, axis=1)


def side_by_side(a: np.ndarray, b: np.ndarray, gap: int = 4) -> np.ndarray:
    """Two uint8 images of the same height next to each other with a white gap."""
    sep = np.full((a.shape[0], gap), 255, dtype=np.uint8)
    return np.concatenate([a, sep, b], axis=1)


def modality_groups(classes: Sequence[str], fallback: str) -> dict[str, list[int]]:
    """Class indices per modality (``CT/...`` prefixes); one group named ``fallback`` otherwise."""
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(classes):
        groups.setdefault(c.split("/")[0] if "/" in c else fallback, []).append(i)
    return groups
