"""NIfTI reader: nibabel's own real test volumes and NIfTI files written here from real bundled
CT slices; slicing axis, canonical orientation, 4D handling, HU units and broken headers."""

from __future__ import annotations

import functools
import os
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medsynth.errors import InputError
from medsynth.readers import Modality, SourceConfig, read_source
from medsynth.readers.nifti import read_nifti

NIB_DATA = Path(os.path.dirname(nib.__file__)) / "tests" / "data"
DATA = Path(__file__).resolve().parents[2] / "data"


@functools.cache
def _ct_slices() -> np.ndarray:
    with np.load(DATA / "mednist_ct_small.npz") as z:
        return z["test_images"][:8]


def ct_volume(n: int = 6) -> np.ndarray:
    """n real CT slices stacked along the last axis, in HU-like int16 (x, y, z) = 64 x 64 x n."""
    imgs = _ct_slices()[:n].astype(np.int16) * 8 - 1024
    return np.ascontiguousarray(np.moveaxis(imgs, 0, -1))


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return path


def read(path: Path, axis: int = 2, modality: str = "CT", root: Path | None = None) -> tuple[list, list]:
    rejected: list = []
    src = SourceConfig(path=str(path), modality=Modality(modality), classes=["vol"], nifti_axis=axis)
    recs = list(read_nifti(src, path, lambda w, r: rejected.append((w, r)), root or path.parent))
    return recs, rejected


@pytest.mark.parametrize(("axis", "count", "shape"), [(2, 6, (64, 64)), (0, 64, (6, 64)), (1, 64, (6, 64))])
def test_slices_along_the_chosen_axis(tmp_path: Path, axis, count, shape):
    vol = ct_volume()
    recs, _ = read(write_nifti(tmp_path / "ct.nii.gz", vol), axis=axis)
    assert len(recs) == count and recs[0].image.shape == shape
    assert [r.frame for r in recs] == list(range(count))
    assert len({r.volume_id for r in recs}) == 1
    np.testing.assert_array_equal(recs[3].image, np.rot90(np.take(vol, 3, axis=axis)))


def test_ct_volume_is_stored_in_hounsfield_units(tmp_path: Path):
    vol = ct_volume()
    recs, _ = read(write_nifti(tmp_path / "ct.nii", vol))
    assert all(r.units == "HU" and r.image.dtype == np.float32 for r in recs)
    assert recs[0].image.min() == vol[..., 0].min()


def test_orientation_is_made_canonical(tmp_path: Path):
    vol = ct_volume(3)
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])  # same anatomy stored left-right mirrored (LAS)
    ras, _ = read(write_nifti(tmp_path / "ras.nii", vol))
    las, _ = read(write_nifti(tmp_path / "las.nii", vol[::-1].copy(), flip))
    for a, b in zip(ras, las, strict=True):
        np.testing.assert_array_equal(a.image, b.image)


def test_4d_volume_uses_its_first_time_point(tmp_path: Path):
    vol = ct_volume(4)
    four_d = np.stack([vol, vol[::-1]], axis=-1)  # 64 x 64 x 4 x 2
    recs, _ = read(write_nifti(tmp_path / "t.nii.gz", four_d))
    assert len(recs) == 4
    np.testing.assert_array_equal(recs[1].image, np.rot90(vol[:, :, 1]))


def test_nibabel_real_volumes():
    recs, _ = read(NIB_DATA / "anatomical.nii", modality="MR")  # 33 x 41 x 25, stored LAS
    assert len(recs) == 25 and recs[0].image.shape == (41, 33) and recs[0].units == "raw"
    sag, _ = read(NIB_DATA / "anatomical.nii", axis=0, modality="MR")
    assert len(sag) == 33
    fmri, _ = read(NIB_DATA / "functional.nii", modality="MR")  # 17 x 21 x 3 x 20 time points
    assert len(fmri) == 3


def test_volume_id_is_a_hash_not_the_file_name(tmp_path: Path):
    recs, _ = read(write_nifti(tmp_path / "Doe_Jane_20240314.nii.gz", ct_volume(2)))
    for r in recs:
        assert "Doe" not in r.id + r.volume_id + r.source_file and "2024" not in r.source_file


def test_folder_of_volumes_quarantines_other_files(tmp_path: Path):
    write_nifti(tmp_path / "a.nii.gz", ct_volume(2))
    write_nifti(tmp_path / "b.nii.gz", ct_volume(3))
    (tmp_path / "readme.txt").write_text("notes")
    rejected: list = []
    src = SourceConfig(path="x", modality=Modality.CT, classes=["vol"])
    recs = list(read_source(src, tmp_path, lambda w, r: rejected.append(w), tmp_path))
    assert len(recs) == 5 and len({r.volume_id for r in recs}) == 2
    assert rejected == ["readme.txt"]


def _patch(raw: bytes, offset: int, fmt: str, value) -> bytes:
    b = bytearray(raw)
    b[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
    return bytes(b)


@pytest.mark.parametrize(("name", "corrupt", "reason"), [
    ("truncated_header", lambda b: b[:200], "truncated NIfTI header"),
    ("sizeof_hdr", lambda b: _patch(b, 0, "<i", 123), "sizeof_hdr"),
    ("magic", lambda b: b[:344] + b"xx1\x00" + b[348:], "magic string"),
    ("datatype", lambda b: _patch(b, 70, "<h", 999), "data code 999"),
    ("dim0", lambda b: _patch(b, 40, "<h", 9), "dim[0] = 9"),
    ("negative_dim", lambda b: _patch(b, 42, "<h", -5), "must all be >= 1"),
    ("truncated_data", lambda b: b[:1000], "cannot read the NIfTI data"),
])
def test_wrong_header_is_one_clear_input_error(tmp_path: Path, name, corrupt, reason):
    good = write_nifti(tmp_path / "good.nii", ct_volume(2))
    bad = tmp_path / f"{name}.nii"
    bad.write_bytes(corrupt(good.read_bytes()))
    with pytest.raises(InputError) as err:
        read(bad)
    msg = str(err.value)
    assert msg.startswith(f"{bad}: ") and reason in msg and "\n" not in msg
