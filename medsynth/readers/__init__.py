"""Readers turn one source (a MedMNIST .npz, a folder of PNG/JPEG by class, DICOM files or
series, NIfTI volumes) into :class:`~medsynth.dataset.ImageRecord` objects.

One module per format (``npz``, ``image_folder``, ``dicom``, ``nifti``), each declaring a
:class:`~medsynth.readers.base.Format`; adding a format is adding one such module (see
``medsynth/readers/base.py``). A reader raises :class:`~medsynth.errors.InputError` when the
source as a whole is unusable (corrupt archive, unknown format, empty folder) and reports a single
bad record to the ``reject`` callback (it goes to quarantine with its reason) when only that record
is bad.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterator
from pathlib import Path

from medsynth.dataset import ImageRecord
from medsynth.errors import ConfigError, InputError
from medsynth.readers.base import (
    DICOM_EXTS,
    FORMAT_NAMES,
    IMAGE_EXTS,
    MODALITY_FAMILY,
    Format,
    Modality,
    Reject,
    SourceConfig,
    SourceFormat,
    is_dicom_file,
    is_nifti,
    rel,
    same_modality,
)

__all__ = ["DICOM_EXTS", "FORMAT_NAMES", "IMAGE_EXTS", "MODALITY_FAMILY", "Format", "Modality", "Reject",
           "SourceConfig", "SourceFormat", "detect_format", "formats", "is_dicom_file", "is_nifti",
           "read_source", "rel", "same_modality"]


@functools.cache
def formats() -> tuple[Format, ...]:
    """Every format module's declaration, in guessing order (``rank``)."""
    found = []
    for name in FORMAT_NAMES:
        fmt = getattr(importlib.import_module(f"{__name__}.{name}"), "FORMAT", None)
        if not isinstance(fmt, Format) or fmt.name != name:
            raise ConfigError(f"medsynth/readers/{name}.py: declares no FORMAT = Format(name={name!r}, ...); every "
                              "module in medsynth/readers/ but base.py is an ingest format")
        found.append(fmt)
    return tuple(sorted(found, key=lambda f: f.rank))


def _expected() -> str:
    return ", ".join(f.expects for f in formats())


def detect_format(path: Path) -> SourceFormat:
    """Guess a source's format from its name/content; unknown types are an error."""
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_file():
        for f in formats():
            if f.whole_file and f.claims(path):
                return SourceFormat(f.name)
        raise InputError(f"{path}: unknown file type (expected {_expected()}, or a folder)")
    files = [p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")]
    if not files:
        raise InputError(f"{path}: empty folder, no images to ingest")
    for f in formats():
        if any(f.claims(p) for p in files):
            return SourceFormat(f.name)
    raise InputError(f"{path}: no readable images found (unknown file types: {sorted({p.suffix or p.name for p in files})[:5]}; "
                     f"expected {_expected()})")


def read_source(src: SourceConfig, path: Path, reject: Reject, rel_root: Path) -> Iterator[ImageRecord]:
    """Yield the records of one source, dispatching on its (detected) format."""
    fmt = detect_format(path) if src.format == SourceFormat.AUTO else SourceFormat(src.format)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    reader = next(f for f in formats() if f.name == fmt.value)
    yield from reader.read(src, path, reject, rel_root)
