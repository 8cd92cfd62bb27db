"""Readers turn one source (a MedMNIST .npz, a folder of PNG/JPEG by class, DICOM files or
series, NIfTI volumes) into :class:`~medsynth.dataset.ImageRecord` objects.

A reader raises :class:`~medsynth.errors.InputError` when the source as a whole is unusable
(corrupt archive, unknown format, empty folder) and reports a single bad record to the
``reject`` callback (it goes to quarantine with its reason) when only that record is bad.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from medsynth.dataset import ImageRecord
from medsynth.errors import ConfigError, InputError

Reject = Callable[[str, str], None]  # (source file or record id, reason)


class SourceFormat(enum.StrEnum):
    AUTO = "auto"
    NPZ = "npz"
    IMAGE_FOLDER = "image_folder"
    DICOM = "dicom"
    NIFTI = "nifti"


class Modality(enum.StrEnum):
    """Modalities by their DICOM code (PS3.3 C.7.3.1.1.1); XR is any projection X-ray."""

    XR = "XR"  # projection radiography, unspecified
    CR = "CR"  # computed radiography
    DX = "DX"  # digital radiography
    CT = "CT"
    MR = "MR"
    US = "US"  # ultrasound
    MG = "MG"  # mammography
    PT = "PT"  # PET


# Codes of one family describe the same kind of image: an XR source accepts CR and DX files.
MODALITY_FAMILY = {"XR": "XR", "CR": "XR", "DX": "XR"}


def same_modality(a: str, b: str) -> bool:
    """True when DICOM codes ``a`` and ``b`` are the same modality or the same family (XR, CR, DX)."""
    return a == b or MODALITY_FAMILY.get(a, a) == MODALITY_FAMILY.get(b, b)


@dataclass(frozen=True)
class SourceConfig:
    """One input source of a dataset (an entry of ``ingest.datasets.<name>`` in params.yaml).

    ``classes`` maps npz labels (by index) or folder names to class names; for DICOM/NIfTI, whose
    files carry no label, its single entry names the class of every image.
    """

    path: str
    format: SourceFormat = SourceFormat.AUTO
    modality: Modality = Modality.CT
    classes: list[str] = field(default_factory=list)
    split: str = ""  # force a split for sources that have none ("" = assigned by preprocess)
    nifti_axis: int = 2  # NIfTI: axis sliced into 2D images (2 = axial for RAS volumes)

    def check(self) -> None:
        if self.split not in ("", "train", "val", "test"):
            raise ConfigError(f"source {self.path}: split must be train, val, test or empty, not {self.split!r}")
        if self.nifti_axis not in (0, 1, 2):
            raise ConfigError(f"source {self.path}: nifti_axis must be 0, 1 or 2")


IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
DICOM_EXTS = {".dcm", ".dicom", ".ima"}


def is_dicom_file(p: Path) -> bool:
    if p.suffix.lower() in DICOM_EXTS:
        return True
    try:
        with open(p, "rb") as f:
            head = f.read(132)
        return len(head) == 132 and head[128:132] == b"DICM"
    except OSError:
        return False


def is_nifti(p: Path) -> bool:
    name = p.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def detect_format(path: Path) -> SourceFormat:
    """Guess a source's format from its name/content; unknown types are an error."""
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return SourceFormat.NPZ
        if is_nifti(path):
            return SourceFormat.NIFTI
        if is_dicom_file(path):
            return SourceFormat.DICOM
        raise InputError(f"{path}: unknown file type (expected .npz, DICOM, .nii/.nii.gz, or a folder)")
    files = [p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")]
    if not files:
        raise InputError(f"{path}: empty folder, no images to ingest")
    if any(is_nifti(p) for p in files):
        return SourceFormat.NIFTI
    if any(p.suffix.lower() in IMAGE_EXTS for p in files):
        return SourceFormat.IMAGE_FOLDER
    if any(is_dicom_file(p) for p in files):
        return SourceFormat.DICOM
    if any(p.suffix.lower() == ".npz" for p in files):
        return SourceFormat.NPZ
    raise InputError(f"{path}: no readable images found (unknown file types: {sorted({p.suffix or p.name for p in files})[:5]})")


def read_source(src: SourceConfig, path: Path, reject: Reject, rel_root: Path) -> Iterator[ImageRecord]:
    """Yield the records of one source, dispatching on its (detected) format."""
    fmt = detect_format(path) if src.format == SourceFormat.AUTO else src.format
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if fmt == SourceFormat.NPZ:
        from medsynth.readers.npz import read_npz

        files = [path] if path.is_file() else sorted(path.rglob("*.npz"))
        for f in files:
            yield from read_npz(src, f, reject, rel_root)
    elif fmt == SourceFormat.IMAGE_FOLDER:
        from medsynth.readers.folder import read_image_folder

        yield from read_image_folder(src, path, reject, rel_root)
    elif fmt == SourceFormat.DICOM:
        from medsynth.readers.dicom import read_dicom

        yield from read_dicom(src, path, reject, rel_root)
    elif fmt == SourceFormat.NIFTI:
        from medsynth.readers.nifti import read_nifti

        yield from read_nifti(src, path, reject, rel_root)
    else:  # pragma: no cover - enum is exhaustive
        raise InputError(f"{path}: unsupported format {fmt}")


def rel(path: Path, root: Path) -> str:
    """Path relative to the input root when possible (what the manifest records), with every folder
    or file name that matches an identifier rule (:func:`medsynth.deid.scrub_path`) hashed."""
    from medsynth.deid import scrub_path

    try:
        return scrub_path(path.resolve().relative_to(root.resolve()).as_posix())
    except ValueError:
        return scrub_path(path.name)
