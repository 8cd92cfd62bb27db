"""The canonical dataset that ingest writes and every later step reads.

Layout of a canonical dataset folder::

    manifest.parquet     one row per 2D image (columns: MANIFEST_COLUMNS)
    shards/NNN.npy       images stacked by (height, width, dtype); row -> (shard, index)
    classes.json         {"classes": [...], "modalities": [...]} in label order

Images keep their source dtype and values (uint8 for MedMNIST/PNG, float32 Hounsfield units for
CT DICOM, ...). Preprocess turns them into the training-ready artifact (see ``prepared.py``).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medsynth.errors import InputError
from medsynth.fileio import read_parquet, sha256_file, write_parquet

MANIFEST_COLUMNS = [
    "id",  # stable id: <source key>:<split or part>:<index>[:<frame>]
    "source_file",  # path of the file it came from, relative to the input root
    "source_format",  # npz | image | dicom | nifti
    "modality",  # XR | CT | MR
    "label",  # int, index into classes.json
    "class_name",
    "split",  # train | val | test | "" (assigned deterministically by preprocess)
    "volume_id",  # grouping key for slices/frames of one volume or series ("" if 2D)
    "frame",  # slice/frame index inside the volume (0 for 2D)
    "units",  # raw | HU
    "burned_in_annotation",  # bool: DICOM says (or may say) text is burned into the pixels
    "sha256",  # of the pixel bytes as stored
    "height",
    "width",
    "dtype",
    "min",
    "max",
    "mean",
    "std",
    "nan_count",
    "shard",
    "index",
]

SPLITS = ("train", "val", "test")


@dataclass
class ImageRecord:
    """One 2D image as a reader yields it, before it is stored."""

    image: np.ndarray
    id: str
    source_file: str
    source_format: str
    modality: str
    class_name: str
    split: str = ""
    volume_id: str = ""
    frame: int = 0
    units: str = "raw"
    burned_in_annotation: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def image_stats(img: np.ndarray) -> dict[str, Any]:
    """Per-image statistics for the manifest (NaN-aware)."""
    a = np.asarray(img)
    f = a.astype(np.float64, copy=False)
    nan = int(np.count_nonzero(~np.isfinite(f))) if np.issubdtype(a.dtype, np.floating) else 0
    finite = f[np.isfinite(f)] if nan else f
    if finite.size == 0:
        mn = mx = mean = std = float("nan")
    else:
        mn, mx = float(finite.min()), float(finite.max())
        mean, std = float(finite.mean()), float(finite.std())
    import hashlib

    return {
        "sha256": hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest(),
        "height": int(a.shape[0]) if a.ndim >= 1 else 0,
        "width": int(a.shape[1]) if a.ndim >= 2 else 0,
        "dtype": str(a.dtype),
        "min": mn,
        "max": mx,
        "mean": mean,
        "std": std,
        "nan_count": nan,
    }


class DatasetWriter:
    """Collects records and writes a canonical dataset folder (call :meth:`write` once)."""

    def __init__(self, classes: list[str], modalities: list[str]):
        if len(classes) != len(modalities):
            raise ValueError("classes and modalities must have the same length")
        self.classes = list(classes)
        self.modalities = list(modalities)
        self._label = {c: i for i, c in enumerate(self.classes)}
        self._rows: list[dict[str, Any]] = []
        self._groups: dict[tuple, list[np.ndarray]] = defaultdict(list)
        self._group_names: dict[tuple, str] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def label_of(self, class_name: str) -> int:
        try:
            return self._label[class_name]
        except KeyError:
            raise InputError(
                f"class {class_name!r} is not declared; known: {', '.join(self.classes)}"
            ) from None

    def add(self, rec: ImageRecord) -> dict[str, Any]:
        """Store one record; returns its manifest row."""
        img = np.asarray(rec.image)
        key = (img.shape, img.dtype.str)
        if key not in self._group_names:
            self._group_names[key] = f"{len(self._group_names):03d}"
        row = {
            "id": rec.id,
            "source_file": rec.source_file,
            "source_format": rec.source_format,
            "modality": rec.modality,
            "label": self.label_of(rec.class_name),
            "class_name": rec.class_name,
            "split": rec.split,
            "volume_id": rec.volume_id,
            "frame": int(rec.frame),
            "units": rec.units,
            "burned_in_annotation": bool(rec.burned_in_annotation),
            **image_stats(img),
            "shard": self._group_names[key],
            "index": len(self._groups[key]),
        }
        self._groups[key].append(img)
        self._rows.append(row)
        return row

    def write(self, out_dir: str | os.PathLike) -> Path:
        """Write manifest, shards and classes into ``out_dir`` (which should be empty/new)."""
        import pandas as pd

        out = Path(out_dir)
        (out / "shards").mkdir(parents=True, exist_ok=True)
        for key, imgs in self._groups.items():
            np.save(out / "shards" / f"{self._group_names[key]}.npy", np.stack(imgs))
        df = pd.DataFrame(self._rows, columns=MANIFEST_COLUMNS)
        write_parquet(df, out / "manifest.parquet")
        (out / "classes.json").write_text(
            json.dumps({"classes": self.classes, "modalities": self.modalities}, indent=2) + "\n"
        )
        return out


class CanonicalDataset:
    """Read access to a canonical dataset folder."""

    def __init__(self, root: str | os.PathLike):

        self.root = Path(root)
        mf = self.root / "manifest.parquet"
        if not mf.is_file():
            raise InputError(f"{self.root}: not a canonical dataset (manifest.parquet missing; run `medsynth ingest`)")
        self.manifest = read_parquet(mf)
        meta = json.loads((self.root / "classes.json").read_text())
        self.classes: list[str] = meta["classes"]
        self.modalities: list[str] = meta["modalities"]
        self._shards: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.manifest)

    def shard(self, name: str) -> np.ndarray:
        if name not in self._shards:
            self._shards[name] = np.load(self.root / "shards" / f"{name}.npy", mmap_mode="r", allow_pickle=False)
        return self._shards[name]

    def image(self, row: int) -> np.ndarray:
        """The stored 2D image of manifest row ``row`` (positional)."""
        r = self.manifest.iloc[row]
        return np.asarray(self.shard(str(r["shard"]))[int(r["index"])])


def dataset_hash(root: str | os.PathLike) -> str:
    """Hash of a canonical dataset's data (manifest, classes, shards), not of its reports: the data
    version validate records and preprocess carries into every later step."""
    import hashlib

    root = Path(root)
    h = hashlib.sha256()
    files = [root / "manifest.parquet", root / "classes.json", *sorted((root / "shards").glob("*.npy"))]
    for f in files:
        h.update(f.relative_to(root).as_posix().encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()
