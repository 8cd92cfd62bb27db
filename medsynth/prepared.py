"""The training-ready artifact that preprocess writes and train / evaluate / monitor read.

Layout::

    data.npz    {split}_x: uint8 [N, 1, R, R] (value v means v / 127.5 - 1 in [-1, 1]),
                {split}_y: int64 [N], {split}_ids: str [N]  for split in train, val, test
    meta.json   resolution, classes, modalities, counts, stats, config, source data hash

uint8 keeps the artifact 4x smaller than float32 and loses nothing for 8-bit sources; windowed CT
is quantised to 256 levels over its window, the usual display depth.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medsynth.errors import InputError
from medsynth.imaging import to_uint8, to_unit

# to_unit / to_uint8 are re-exported for their importers; they live in medsynth/imaging.py.
__all__ = ["SPLITS", "PreparedData", "to_uint8", "to_unit"]

SPLITS = ("train", "val", "test")


@dataclass
class PreparedData:
    """A loaded training-ready artifact."""

    root: Path
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]

    @classmethod
    def load(cls, root: str | os.PathLike) -> PreparedData:
        root = Path(root)
        data_file, meta_file = root / "data.npz", root / "meta.json"
        if not data_file.is_file() or not meta_file.is_file():
            raise InputError(f"{root}: not a preprocessed artifact (data.npz/meta.json missing; run `medsynth preprocess`)")
        try:
            with np.load(data_file, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except Exception as exc:  # noqa: BLE001 - zipfile/numpy raise several types
            raise InputError(f"{data_file}: cannot be read ({exc})") from None
        return cls(root=root, meta=json.loads(meta_file.read_text()), arrays=arrays)

    @property
    def resolution(self) -> int:
        return int(self.meta["resolution"])

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def num_classes(self) -> int:
        return len(self.meta["classes"])

    @property
    def data_hash(self) -> str:
        return str(self.meta.get("data_hash", "unknown"))

    def count(self, split: str) -> int:
        return int(self.arrays[f"{split}_x"].shape[0])

    def split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(images float32 [N,1,R,R] in [-1,1], labels int64 [N]) of one split."""
        if split not in SPLITS:
            raise InputError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        return to_unit(self.arrays[f"{split}_x"]), self.arrays[f"{split}_y"].astype(np.int64)

    def split_uint8(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        return self.arrays[f"{split}_x"], self.arrays[f"{split}_y"].astype(np.int64)
