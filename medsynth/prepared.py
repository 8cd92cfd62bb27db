"""The training-ready artifact that preprocess writes and train / evaluate / monitor read.

Layout::

    {split}_x.npy    uint8 [N, 1, R, R] (value v means v / 127.5 - 1 in [-1, 1])
    {split}_y.npy    int64 [N]
    {split}_ids.npy  str [N]                    for split in train, val, test
    meta.json        resolution, classes, modalities, counts, stats, config, each array's shape,
                     dtype and sha256, the data hash (of the arrays) and the source's data hash

Plain ``.npy`` files are memory-mapped when loaded: a training run reads the pages of the images
it draws, so its memory does not grow with the dataset (artifacts of the earlier one-file
``data.npz`` layout still load, whole).

uint8 keeps the artifact 4x smaller than float32 and loses nothing for 8-bit sources; windowed CT
is quantised to 256 levels over its window, the usual display depth.
"""

from __future__ import annotations

import json
import mmap
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
FORMAT = "medsynth.prepared/2"
ARRAYS = tuple(f"{s}_{a}" for s in SPLITS for a in ("x", "y", "ids"))


def random_access(arr: np.ndarray) -> None:
    """Tell the kernel a memory-mapped array is read at random (training draws shuffled batches):
    no read-ahead, so a batch reads its images' pages, not megabytes around each of them."""
    mm = getattr(arr, "_mmap", None)
    if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_RANDOM"):
        mm.madvise(mmap.MADV_RANDOM)


class ImageReader:
    """The images of a prepared ``.npy`` read on demand, as torch tensors: ``reader[idx]`` (a tensor
    or array of indices, a slice, an int) reads just those images with ``pread`` and returns them
    as a new uint8 tensor. Nothing of the file is held or mapped by the process, so a training run's
    memory does not grow with the dataset (runs of consecutive indices are read in one call).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
            self.offset = f.tell()
        if fortran or len(shape) < 1:
            raise InputError(f"{self.path}: not a C-ordered image array")
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.item = int(np.prod(shape[1:], dtype=np.int64)) * self.dtype.itemsize
        if self.path.stat().st_size < self.offset + self.item * self.shape[0]:
            raise InputError(f"{self.path}: shorter than its header says ({self.shape}); re-run `medsynth preprocess`")
        self._fd: int | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self) -> dict[str, Any]:  # a worker process opens the file itself
        return {k: v for k, v in self.__dict__.items() if k != "_fd"} | {"_fd": None}

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)

    def _read(self, start: int, count: int) -> np.ndarray:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        buf = os.pread(self._fd, count * self.item, self.offset + start * self.item)
        if len(buf) != count * self.item:
            raise InputError(f"{self.path}: truncated at image {start + len(buf) // max(self.item, 1)}")
        return np.frombuffer(buf, dtype=self.dtype).reshape(count, *self.shape[1:])

    def __getitem__(self, key: Any) -> Any:
        import torch

        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1:
                return torch.from_numpy(self._read(start, max(stop - start, 0)).copy())
            key = np.arange(start, stop, step)
        scalar = isinstance(key, (int, np.integer)) or (hasattr(key, "ndim") and key.ndim == 0)
        idx = np.asarray(key.cpu() if isinstance(key, torch.Tensor) else key, dtype=np.int64).reshape(-1)
        idx = np.where(idx < 0, idx + len(self), idx)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"{self.path}: index out of range for {len(self)} images")
        order = np.argsort(idx, kind="stable")
        ranked = idx[order]
        out = np.empty((len(idx), *self.shape[1:]), dtype=self.dtype)
        breaks = np.flatnonzero(np.diff(ranked) != 1) + 1  # runs of consecutive indices: one read each
        for run in np.split(np.arange(len(ranked)), breaks):
            if run.size:
                first = int(ranked[run[0]])
                block = self._read(first, int(ranked[run[-1]]) - first + 1)
                out[order[run]] = block[ranked[run] - first]
        t = torch.from_numpy(out)
        return t[0] if scalar else t


@dataclass
class PreparedData:
    """A loaded training-ready artifact."""

    root: Path
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]

    @classmethod
    def load(cls, root: str | os.PathLike) -> PreparedData:
        """Open a prepared artifact: its arrays memory-mapped, read-only (copy-on-write)."""
        root = Path(root)
        meta_file, legacy = root / "meta.json", root / "data.npz"
        files = {name: root / f"{name}.npy" for name in ARRAYS}
        if not meta_file.is_file() or not (legacy.is_file() or all(f.is_file() for f in files.values())):
            raise InputError(f"{root}: not a preprocessed artifact (meta.json or its arrays missing; run `medsynth preprocess`)")
        arrays: dict[str, np.ndarray] = {}
        if not all(f.is_file() for f in files.values()):
            try:
                with np.load(legacy, allow_pickle=False) as z:
                    arrays = {k: z[k] for k in z.files}
            except Exception as exc:  # noqa: BLE001 - zipfile/numpy raise several types
                raise InputError(f"{legacy}: cannot be read ({exc})") from None
        for name, f in files.items():
            if name not in arrays:
                try:
                    arrays[name] = np.load(f, mmap_mode="c", allow_pickle=False)
                except (OSError, ValueError) as exc:
                    raise InputError(f"{f}: cannot be read ({exc}); re-run `medsynth preprocess`") from None
                random_access(arrays[name])
        meta = json.loads(meta_file.read_text())
        for name, spec in (meta.get("arrays") or {}).items():  # a truncated or swapped file
            a = arrays.get(name)
            if a is None or list(a.shape) != spec["shape"] or a.dtype.str != spec["dtype"]:
                raise InputError(f"{root / (name + '.npy')}: shape/dtype differs from meta.json (re-run `medsynth preprocess`)")
        return cls(root=root, meta=meta, arrays=arrays)

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

    def sample(self, split: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`split`, or a seeded sample of ``n`` of its images (in file order) when it holds more:
        what bounds the memory of evaluating against a large dataset."""
        count = self.count(split)
        if n <= 0 or count <= n:
            return self.split(split)
        idx = np.sort(np.random.default_rng(seed + 7).choice(count, size=n, replace=False))
        return to_unit(np.asarray(self.arrays[f"{split}_x"][idx])), self.arrays[f"{split}_y"][idx].astype(np.int64)

    def images(self, split: str) -> Any:
        """The uint8 images of one split for training: an :class:`ImageReader` over its file (read on
        demand), or a tensor of the resident array for an artifact of the one-file layout."""
        import torch

        f = self.root / f"{split}_x.npy"
        return ImageReader(f) if f.is_file() else torch.from_numpy(np.asarray(self.arrays[f"{split}_x"]))

    def split_uint8(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        return self.arrays[f"{split}_x"], self.arrays[f"{split}_y"].astype(np.int64)
