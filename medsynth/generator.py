"""The contract between training, evaluation, the app and the monitor: something that makes images.

Anything with this shape can be evaluated, gated, served and monitored: a trained DCGAN/cGAN
(loaded from a checkpoint or an MLflow model URI by the training package), or, in tests and as a
reference point, a "generator" that returns held-out real images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class ImageGenerator(Protocol):
    """Makes ``n`` float32 images ``[n, 1, R, R]`` in [-1, 1] from a seed (same seed, same images).

    ``classes`` is empty for unconditional models; for conditional ones ``labels`` (length ``n``,
    each in ``0..len(classes)-1``) picks the class of each image.
    """

    resolution: int
    classes: list[str]

    def generate(
        self,
        n: int,
        seed: int,
        labels: Sequence[int] | np.ndarray | None = None,
        truncation: float = 1.0,
    ) -> np.ndarray: ...
