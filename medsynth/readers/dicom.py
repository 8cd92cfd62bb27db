"""DICOM files and series (pydicom 3) -> 2D images, with patient identity left behind.

1. Read every file's header (no pixels yet); group files into volumes by a *hash* of their
   SeriesInstanceUID and sort each volume by position along the slice normal
   (ImagePositionPatient . normal of ImageOrientationPatient), else InstanceNumber, else file name.
2. Read the pixels volume by volume; a multi-frame file yields one image per frame.
3. CT pixel data is rescaled to Hounsfield units (RescaleSlope/Intercept, per frame for enhanced
   CT) and stored as float32 with ``units="HU"``. Other modalities keep their stored values.
4. MONOCHROME1 (low value = white) is inverted over the stored bit range so bright means dense.
   HU values are physical (dense = high) whatever the display convention, so CT in HU is left as is.
5. Only pixels and a few non-identifying facts leave this module: ids and volume ids are hashes,
   never UIDs or names, and file/folder names that look like UIDs, dates or the patient's name are
   replaced by hashes (:func:`medsynth.deid.scrub_path`). The pydicom Dataset is dropped here.

A bad file inside a folder goes to quarantine with its reason; a single given file that cannot be
read is an :class:`~medsynth.errors.InputError`.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medsynth.dataset import ImageRecord
from medsynth.deid import burned_in_annotation, identity_strings, pseudonym, scrub_path
from medsynth.errors import InputError
from medsynth.readers.base import Format, Reject, SourceConfig, is_dicom_file, rel, same_modality
from medsynth.readers.image_folder import MAX_SIDE, source_files, split_and_class

MAX_FRAMES = 4096  # bound on frames per file (user-controlled size)
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
# DICOM modalities onto the project's (medsynth.readers.Modality); others (SC, OT, ...) take the source's.
MODALITY_MAP = {"CT": "CT", "MR": "MR", "CR": "CR", "DX": "DX", "DR": "DX", "RG": "XR", "MG": "MG",
                "US": "US", "PT": "PT", "XA": "XR", "RF": "XR", "PX": "XR", "IO": "XR"}


class BadDicom(ValueError):
    """One file cannot be used; the message is safe to store (no identifiers)."""


@dataclass
class _Header:
    """What this reader keeps of a file's header: nothing that identifies anyone."""

    file: Path
    source: str  # scrubbed relative path
    volume: str  # hash of SeriesInstanceUID
    position: float | None
    instance: int | None
    n_frames: int
    split: str
    class_name: str
    burned_in: bool


def _why(exc: BaseException, f: Path, source: str) -> str:
    """First line of an error, with the file's real path replaced by its scrubbed one."""
    msg = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return msg.replace(str(f), source).replace(f.name, source.rsplit("/", 1)[-1])[:200]


def _read(f: Path, stop_before_pixels: bool) -> Any:
    import pydicom
    from pydicom.errors import InvalidDicomError

    with warnings.catch_warnings():
        # pydicom warns about malformed values *quoting them* (names, UIDs): keep them off the console
        warnings.simplefilter("ignore")
        try:
            return pydicom.dcmread(f, stop_before_pixels=stop_before_pixels)
        except InvalidDicomError:
            # Files written without the 128-byte preamble are still DICOM if they parse to an image.
            ds = pydicom.dcmread(f, stop_before_pixels=stop_before_pixels, force=True)
            if "Rows" not in ds or "Columns" not in ds:
                raise BadDicom("not a DICOM file (no DICM header and no image attributes)") from None
            return ds


def _position(ds: Any) -> float | None:
    ipp, iop = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
    if ipp is None or iop is None or len(ipp) != 3 or len(iop) != 6:
        return None
    normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
    return float(np.dot(normal, np.asarray(ipp, float)))


def _header(f: Path, root: Path, src: SourceConfig, rel_root: Path, idents: set[str]) -> _Header | None:
    """Header facts of one file; None for a DICOMDIR. Raises BadDicom for a file it cannot use.

    Adds the patient's identifying strings to ``idents`` (to scrub the paths of rejected files)."""
    source = scrub_path(rel(f, rel_root))
    try:
        ds = _read(f, stop_before_pixels=True)
    except BadDicom:
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for malformed files
        raise BadDicom(f"not a readable DICOM file ({_why(exc, f, source)})") from None
    meta = getattr(ds, "file_meta", None)
    if meta is not None and str(meta.get("MediaStorageSOPClassUID", "")) == DICOMDIR_CLASS:
        return None
    try:
        idents.update(identity_strings(ds))
        source = scrub_path(rel(f, rel_root), identity_strings(ds))
        if "Rows" not in ds or "Columns" not in ds:
            raise BadDicom("no image in this DICOM object (no Rows/Columns, e.g. a report or presentation state)")
        rows, cols, frames = int(ds.Rows), int(ds.Columns), int(ds.get("NumberOfFrames", 1) or 1)
        if not (0 < rows <= MAX_SIDE and 0 < cols <= MAX_SIDE and 0 < frames <= MAX_FRAMES):
            raise BadDicom(f"image size {frames}x{rows}x{cols} outside 1..{MAX_FRAMES} frames, 1..{MAX_SIDE} px")
        declared = MODALITY_MAP.get(str(ds.get("Modality", "")).upper())
        if declared is not None and not same_modality(declared, src.modality.value):
            raise BadDicom(f"Modality {ds.Modality} does not match the source's modality {src.modality.value}")
        series = str(ds.get("SeriesInstanceUID", "") or "")
        volume = pseudonym(series, "series") if series else pseudonym(source, "file")
        inst = ds.get("InstanceNumber")
        instance = int(inst) if inst not in (None, "") else None
        position, burned_in = _position(ds), burned_in_annotation(ds)
    except BadDicom:
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom converts values lazily; malformed ones raise here
        raise BadDicom(f"malformed DICOM header ({type(exc).__name__})") from None
    dirs = list(f.relative_to(root).parts[:-1]) if f != root else []
    split, class_name = split_and_class(dirs, src, source)
    return _Header(f, source, volume, position, instance, frames, split, class_name, burned_in)


def _sorted_volume(headers: list[_Header]) -> list[_Header]:
    """Slices in anatomical order when every slice has a position, else by InstanceNumber, else name."""
    if all(h.position is not None for h in headers):
        return sorted(headers, key=lambda h: (h.position, h.instance or 0, h.source))
    if all(h.instance is not None for h in headers):
        return sorted(headers, key=lambda h: (h.instance, h.source))
    return sorted(headers, key=lambda h: h.source)


def _rescale(ds: Any, frame: int) -> tuple[float, float] | None:
    """(slope, intercept) of one frame: per-frame, then shared functional groups, then top level."""
    for kw in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        groups = ds.get(kw)
        if not groups:
            continue
        item = groups[frame] if kw.startswith("PerFrame") and len(groups) > frame else groups[0]
        pvt = item.get("PixelValueTransformationSequence")
        if pvt and "RescaleSlope" in pvt[0]:
            return float(pvt[0].RescaleSlope), float(pvt[0].get("RescaleIntercept", 0.0))
    if "RescaleSlope" in ds or "RescaleIntercept" in ds:
        return float(ds.get("RescaleSlope", 1.0) or 1.0), float(ds.get("RescaleIntercept", 0.0) or 0.0)
    return None


def _invert(img: np.ndarray, ds: Any) -> np.ndarray:
    """MONOCHROME1 -> MONOCHROME2: mirror the value over the stored bit range (lo + hi - v)."""
    if not np.issubdtype(img.dtype, np.integer):
        return img.min() + img.max() - img
    info = np.iinfo(img.dtype)
    bits = int(ds.get("BitsStored", info.bits) or info.bits)
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return (lo + hi - img.astype(np.int64)).clip(info.min, info.max).astype(img.dtype)


def frames_of(ds: Any) -> Iterator[tuple[np.ndarray, str]]:
    """Each frame of a full Dataset as (2D image, units), rescaled/inverted as the module says."""
    arr = ds.pixel_array
    n = int(ds.get("NumberOfFrames", 1) or 1)
    color = int(ds.get("SamplesPerPixel", 1)) > 1
    if n == 1:
        arr = arr[None]
    if arr.ndim != (4 if color else 3) or arr.shape[0] != n:
        raise BadDicom(f"pixel data has shape {arr.shape}, expected {n} frame(s)")
    ct = str(ds.get("Modality", "")).upper() == "CT"
    mono1 = str(ds.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1"
    for i in range(n):
        img = arr[i]
        if color:  # pydicom returns RGB (YBR converted); store luma like a grayscale export
            img = (img[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))
            img = img.round().astype(np.uint8) if arr.dtype == np.uint8 else img
        rs = _rescale(ds, i) if ct else None
        rescale_type = str(ds.get("RescaleType", "HU") or "HU").upper()
        if rs is not None and rescale_type in ("HU", "US"):
            yield (img.astype(np.float32) * np.float32(rs[0]) + np.float32(rs[1])), "HU"
            continue
        if mono1 and not color:
            img = _invert(img, ds)
        yield np.ascontiguousarray(img), "raw"


def read_dicom(src: SourceConfig, path: Path, reject: Reject, rel_root: Path) -> Iterator[ImageRecord]:
    """Yield one record per 2D image (slice or frame) of the DICOM file or folder ``path``.

    Raises:
        InputError: ``path`` is a single file that is not usable DICOM, or a folder without any.
    """
    single = path.is_file()
    root = path.parent if single else path
    volumes: dict[str, list[_Header]] = defaultdict(list)
    idents: set[str] = set()
    bad: list[tuple[Path, str]] = []
    for f in source_files(path):
        try:
            h = _header(f, root, src, rel_root, idents)
        except BadDicom as exc:
            if single:
                raise InputError(f"{path}: {exc}") from None
            bad.append((f, str(exc)))
            continue
        if h is not None:
            volumes[h.volume].append(h)
    for f, why in bad:  # scrubbed with every patient's identity seen in the folder (names in paths)
        source = scrub_path(rel(f, rel_root), idents)
        reject(source, f"{source}: {why}")
    if not volumes:
        raise InputError(f"{path}: no DICOM images found")
    for vol in sorted(volumes, key=lambda v: min(h.source for h in volumes[v])):
        frame = 0
        for h in _sorted_volume(volumes[vol]):
            try:
                ds = _read(h.file, stop_before_pixels=False)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    images = list(frames_of(ds))
            except Exception as exc:  # noqa: BLE001 - decoding errors come in many types
                why = str(exc) if isinstance(exc, BadDicom) else f"pixel data cannot be decoded ({_why(exc, h.file, h.source)})"
                if single:
                    raise InputError(f"{path}: {why}") from None
                reject(h.source, f"{h.source}: {why}")
                continue
            del ds  # nothing of the header travels further
            for img, units in images:
                yield ImageRecord(
                    image=img,
                    id=f"dicom:{vol}:{frame:05d}",
                    source_file=h.source,
                    source_format="dicom",
                    modality=src.modality.value,
                    class_name=h.class_name,
                    split=h.split,
                    volume_id=vol,
                    frame=frame,
                    units=units,
                    burned_in_annotation=h.burned_in,
                )
                frame += 1


FORMAT = Format(name="dicom", read=read_dicom, claims=is_dicom_file, rank=2, whole_file=True,
                expects="DICOM (.dcm, or a DICM header)")
