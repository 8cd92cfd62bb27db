"""What every reader shares: a source's settings (:class:`SourceConfig`), the modality codes, the
quarantine callback, the manifest's relative paths, and :class:`Format`, the one thing a reader
module declares.

**Adding an ingest format is one file**: ``medsynth/readers/<name>.py`` defining
``FORMAT = Format(name="<name>", read=..., claims=..., rank=..., whole_file=..., expects=...)``. The
module's file name is the format's name in params.yaml (``format: <name>``) and in
:class:`SourceFormat`; ``read_source`` and ``detect_format`` find it there (a test checks every
module in this folder declares a matching ``FORMAT``).
"""

from __future__ import annotations

import enum
import pkgutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from medsynth.dataset import ImageRecord
from medsynth.errors import ConfigError

NOT_FORMATS = ("base",)  # modules of this folder that are not formats
# The formats: one module each, named after the format (found without importing them).
FORMAT_NAMES = tuple(sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                            if m.name not in NOT_FORMATS))

SourceFormat = enum.StrEnum("SourceFormat", {"AUTO": "auto", **{n.upper(): n for n in FORMAT_NAMES}})
SourceFormat.__doc__ = "``auto`` (guessed by ``detect_format``) or one of the format modules' names."


@dataclass(frozen=True)
class Format:
    """A format module's declaration (its ``FORMAT``).

    ``read(src, path, reject, rel_root)`` yields the records of one source; ``claims(file)`` says a
    single file is of this format; ``rank`` orders the guesses (lower first: a folder is the first
    format claiming any of its files); ``whole_file``: one file can be a whole source (an .npz, a
    NIfTI volume), not only a folder of them; ``expects`` names its files in error messages.
    """

    name: str
    read: Callable[..., Iterator[ImageRecord]]
    claims: Callable[[Path], bool]
    rank: int
    whole_file: bool
    expects: str


Reject = Callable[[str, str], None]  # (source file or record id, reason)


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


def rel(path: Path, root: Path) -> str:
    """Path relative to the input root when possible (what the manifest records), with every folder
    or file name that matches an identifier rule (:func:`medsynth.deid.scrub_path`) hashed."""
    from medsynth.deid import scrub_path

    try:
        return scrub_path(path.resolve().relative_to(root.resolve()).as_posix())
    except ValueError:
        return scrub_path(path.name)
