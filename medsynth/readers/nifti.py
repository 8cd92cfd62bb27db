"""NIfTI-1/2 volumes (nibabel) -> 2D slices along a chosen axis, grouped by volume.

1. Check the header before trusting it: sizeof_hdr, magic, datatype, vox_offset, qform/sform codes
   (nibabel's own diagnosis, which it would otherwise "fix" silently) and the dimensions.
2. Reorient to the closest canonical orientation (RAS), so ``nifti_axis`` 0/1/2 means
   sagittal/coronal/axial whatever the scanner stored; slices are rotated so anterior/superior is up.
3. 4D volumes (fMRI, DWI, dynamic series): only the FIRST volume (t = 0) is sliced. Every time point
   repeats the same anatomy, so slicing all of them would add near-duplicates that leak across
   splits and inflate the dataset; the manifest's frame is therefore the slice index.
4. ``volume_id`` is a hash of the file's relative path (never its name: converters often put the
   patient's name or date there), ``frame`` the slice index.
5. Units: a CT volume whose values go below -100 is taken to be in Hounsfield units (air is -1000
   HU; dcm2niix and similar store CT in HU through scl_slope/scl_inter) and stored as float32 HU.
   Anything else keeps its values: integer data without scaling keeps its dtype, the rest is float32.

A NIfTI file that cannot be used is an :class:`~medsynth.errors.InputError` (a whole volume is one
unit; a broken header means the converter that wrote it needs fixing), also inside a folder.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from medsynth.dataset import ImageRecord
from medsynth.deid import pseudonym, scrub_path
from medsynth.errors import InputError
from medsynth.readers.base import Format, Reject, SourceConfig, is_nifti, rel
from medsynth.readers.image_folder import MAX_SIDE, source_files, split_and_class

MAX_VOXELS = 512 * 1024 * 1024  # bound on one 3D volume (user-controlled size)
MAX_SLICES = 4096
# nibabel diagnoses these without refusing the file; they do not change how voxels are read.
BENIGN = ("not SPM compatible", "pixdim[0] (qfac)", "bitpix does not match datatype", "pixdim[1,2,3]")


def _raw_header(path: Path) -> bytes:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as f:
        return f.read(540)


def check_header(path: Path) -> None:
    """Raise InputError naming the first real problem of the file's NIfTI header."""
    import nibabel as nib

    try:
        raw = _raw_header(path)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{path}: cannot read the NIfTI header ({exc})") from None
    if len(raw) < 348:
        raise InputError(f"{path}: truncated NIfTI header ({len(raw)} bytes, need 348)")
    size = {int.from_bytes(raw[:4], e, signed=True): e for e in ("little", "big")}
    if 348 in size:
        klass, block, endian = nib.Nifti1Header, raw[:348], size[348]
    elif 540 in size:
        klass, block, endian = nib.Nifti2Header, raw[:540], size[540]
    else:
        raise InputError(f"{path}: wrong NIfTI header (sizeof_hdr is neither 348 nor 540 in either byte order)")
    problems = klass.diagnose_binaryblock(block, "<" if endian == "little" else ">")
    bad = [p for p in problems.splitlines() if p.strip() and not any(b in p for b in BENIGN)]
    if bad:
        raise InputError(f"{path}: wrong NIfTI header ({'; '.join(bad)})")
    hdr = klass(block, endianness="<" if endian == "little" else ">", check=False)
    dim = [int(d) for d in hdr["dim"]]
    if not 2 <= dim[0] <= 7:
        raise InputError(f"{path}: wrong NIfTI header (dim[0] = {dim[0]}, must be 2..7)")
    shape = dim[1 : dim[0] + 1]
    if any(d < 1 for d in shape):
        raise InputError(f"{path}: wrong NIfTI header (dimensions {shape} must all be >= 1)")
    if any(d > 1 for d in shape[4:]):
        raise InputError(f"{path}: {len(shape)}D data {shape} is not supported (3D, or 4D using its first volume)")
    if int(np.prod(shape[:3], dtype=np.int64)) > MAX_VOXELS:
        raise InputError(f"{path}: volume {shape[:3]} has more than {MAX_VOXELS} voxels")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """nibabel logs each header fix-up it makes; the checks above already decided what matters."""
    log = logging.getLogger("nibabel.global")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def load_volume(path: Path) -> tuple[np.ndarray, int]:
    """The first 3D volume of a NIfTI file in canonical (RAS) orientation, and its time points."""
    import nibabel as nib

    check_header(path)
    with _quiet():
        try:
            img: Any = nib.load(path)
            n_t = img.shape[3] if len(img.shape) > 3 else 1
            proxy = img.dataobj
            data = np.asanyarray(proxy[..., 0] if len(img.shape) > 3 else proxy)
            data = data.reshape(data.shape[:3] + (1,) * (3 - data.ndim)) if data.ndim < 3 else data
            ornt = nib.orientations.io_orientation(img.affine)
            data = nib.orientations.apply_orientation(data, ornt)
        except (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError) as exc:
            why = (str(exc).strip().splitlines() or [type(exc).__name__])[0].replace(f" from {path}", "")
            raise InputError(f"{path}: cannot read the NIfTI data ({why})") from None
    return data, n_t


def slices(volume: np.ndarray, axis: int) -> Iterator[np.ndarray]:
    """2D slices along ``axis``, rotated so the first stored axis runs left-right on screen."""
    for k in range(volume.shape[axis]):
        yield np.ascontiguousarray(np.rot90(np.take(volume, k, axis=axis)))


def read_nifti(src: SourceConfig, path: Path, reject: Reject, rel_root: Path) -> Iterator[ImageRecord]:
    """Yield the slices of each NIfTI file at ``path`` (a file or a folder of them).

    Raises:
        InputError: a NIfTI file has a wrong/corrupt header or data, or the folder holds none.
    """
    files = source_files(path)
    root = path.parent if path.is_file() else path
    volumes = [f for f in files if is_nifti(f)]
    if not volumes:
        raise InputError(f"{path}: no NIfTI files (.nii, .nii.gz) found")
    for f in files:
        if not is_nifti(f):
            source = scrub_path(rel(f, rel_root))
            reject(source, f"{source}: not a NIfTI file (.nii, .nii.gz)")
    for f in volumes:
        source = scrub_path(rel(f, rel_root))
        split, class_name = split_and_class(list(f.relative_to(root).parts[:-1]), src, source)
        data, _n_t = load_volume(f)
        in_plane = [s for a, s in enumerate(data.shape) if a != src.nifti_axis]
        if data.shape[src.nifti_axis] > MAX_SLICES or max(in_plane) > MAX_SIDE:
            raise InputError(f"{f}: volume {data.shape} too large along/across axis {src.nifti_axis}")
        finite = data[np.isfinite(data)] if not np.issubdtype(data.dtype, np.integer) else data
        hu = src.modality.value == "CT" and finite.size > 0 and float(finite.min()) < -100
        if hu or not np.issubdtype(data.dtype, np.integer):
            data = data.astype(np.float32, copy=False)
        data = data.astype(data.dtype.newbyteorder("="), copy=False)  # shards hold native byte order
        vol = pseudonym(source, "nifti")
        for k, img in enumerate(slices(data, src.nifti_axis)):
            yield ImageRecord(
                image=img,
                id=f"nifti:{vol}:{k:05d}",
                source_file=source,
                source_format="nifti",
                modality=src.modality.value,
                class_name=class_name,
                split=split,
                volume_id=vol,
                frame=k,
                units="HU" if hu else "raw",
            )


FORMAT = Format(name="nifti", read=read_nifti, claims=is_nifti, rank=0, whole_file=True, expects=".nii/.nii.gz")
