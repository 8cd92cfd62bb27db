"""MedMNIST-layout .npz archives: ``{split}_images`` uint8 [N, H, W] and ``{split}_labels`` [N, 1]."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from medsynth.dataset import SPLITS, ImageRecord
from medsynth.deid import scrub_path
from medsynth.errors import InputError
from medsynth.readers.base import Format, Reject, SourceConfig, rel


def read_npz(src: SourceConfig, path: Path, reject: Reject, rel_root: Path) -> Iterator[ImageRecord]:
    """Yield every image of every split present, labels kept.

    Raises:
        InputError: not a readable npz, no ``*_images`` arrays, images not [N, H, W] (or
            [N, H, W, 1]), or labels whose count differs from the images'.
    """
    try:
        z = np.load(path, allow_pickle=False)
        names = list(z.files)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise InputError(f"{path}: not a valid .npz archive ({exc})") from None
    splits = [s for s in SPLITS if f"{s}_images" in names]
    if not splits:
        raise InputError(f"{path}: no '<split>_images' arrays (found: {', '.join(names) or 'none'}); expected the MedMNIST layout")
    source = rel(path, rel_root)
    key = scrub_path(path.name.removesuffix(".npz"))
    with z:
        for split in splits:
            try:
                images = z[f"{split}_images"]
                labels = z[f"{split}_labels"] if f"{split}_labels" in names else None
            except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
                raise InputError(f"{path}: array {split}_images cannot be read ({exc})") from None
            if images.ndim == 4 and images.shape[-1] == 1:
                images = images[..., 0]
            if images.ndim != 3:
                raise InputError(f"{path}: {split}_images has shape {images.shape}; expected [N, H, W] grayscale")
            if labels is None:
                if len(src.classes) != 1:
                    raise InputError(f"{path}: {split}_labels missing and the source declares {len(src.classes)} classes")
                labels = np.zeros((len(images),), dtype=np.int64)
            labels = np.asarray(labels).reshape(len(labels), -1)
            if labels.shape[0] != images.shape[0]:
                raise InputError(f"{path}: {split}_labels has {labels.shape[0]} rows for {images.shape[0]} images")
            if labels.shape[1] != 1:
                raise InputError(f"{path}: {split}_labels has {labels.shape[1]} columns; only single-label tasks are supported")
            for i in range(images.shape[0]):
                lab = int(labels[i, 0])
                rid = f"{key}:{split}:{i:06d}"
                if not 0 <= lab < len(src.classes):
                    reject(rid, f"{source}: {split} image {i} has label {lab}, outside 0..{len(src.classes) - 1}")
                    continue
                yield ImageRecord(
                    image=images[i],
                    id=rid,
                    source_file=source,
                    source_format="npz",
                    modality=src.modality.value,
                    class_name=src.classes[lab],
                    split=split,
                )


def read_npz_source(src: SourceConfig, path: Path, reject: Reject, rel_root: Path) -> Iterator[ImageRecord]:
    """One .npz file, or every .npz under a folder (in name order)."""
    for f in [path] if path.is_file() else sorted(path.rglob("*.npz")):
        yield from read_npz(src, f, reject, rel_root)


FORMAT = Format(name="npz", read=read_npz_source, claims=lambda p: p.suffix.lower() == ".npz", rank=3,
                whole_file=True, expects=".npz")
