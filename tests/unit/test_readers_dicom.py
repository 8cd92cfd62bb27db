"""DICOM reader and de-identification, on the bundled real DICOM files and on DICOM files written
here (pydicom) from real bundled CT/MR images with real-looking identifier tags."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from medsynth.components.ingest import ingest_sources
from medsynth.deid import deidentify, find_identifiers, pseudonym, scrub_path
from medsynth.errors import InputError
from medsynth.readers import Modality, SourceConfig, read_source
from medsynth.readers.dicom import read_dicom

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "dicom_samples"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
STUDY_UID = "1.2.826.0.1.3680043.8.498.10203040506070809"
SERIES_UID = "1.2.826.0.1.3680043.8.498.11223344556677889"
# Identifier values written into every test file; none may reach the ingest output.
IDENTIFIERS = {
    "PatientName": "Doe^Jane",
    "PatientID": "PID-7731-XYZ",
    "PatientBirthDate": "19700101",
    "PatientAddress": "12 Acacia Avenue Springfield",
    "InstitutionName": "St Elsewhere General Hospital",
    "ReferringPhysicianName": "House^Gregory",
    "AccessionNumber": "ACC99887766",
    "OtherPatientIDs": "OTHER-5544",
    "StudyDate": "20240314",
    "StudyTime": "101112",
    "StudyInstanceUID": STUDY_UID,
}
PRIVATE_VALUE = "ACME-secret-record-4711"


@functools.cache
def _test_split(name: str) -> np.ndarray:
    with np.load(Path(__file__).resolve().parents[2] / "data" / name) as z:
        return z["test_images"]


def real_images(name: str, n: int, start: int = 0) -> np.ndarray:
    """n real images of a bundled set (its test split, the smallest array to decompress)."""
    return _test_split(name)[start : start + n].copy()


def write_dicom(path: Path, pixels: np.ndarray, *, modality: str = "CT", series_uid: str = SERIES_UID,
                instance: int = 1, z: float | None = None, slope: float | None = 1.0,
                intercept: float | None = -1024.0, photometric: str = "MONOCHROME2", bits_stored: int = 16,
                sop_class: str | None = None, burned_in: str | None = None, uid_suffix: str = "") -> Path:
    """Write one (multi-frame when ``pixels`` is 3D) DICOM file with identifier tags."""
    sop_class = sop_class or (CT_IMAGE if modality == "CT" else MR_IMAGE)
    sop_uid = f"{series_uid}.{instance}{uid_suffix}"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    for kw, value in IDENTIFIERS.items():
        setattr(ds, kw, value)
    ds.private_block(0x0011, "ACME HOSPITAL", create=True).add_new(0x01, "LO", PRIVATE_VALUE)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.SeriesInstanceUID = sop_class, sop_uid, series_uid
    ds.Modality, ds.InstanceNumber = modality, instance
    if z is not None:
        ds.ImagePositionPatient = [0.0, 0.0, z]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if burned_in is not None:
        ds.BurnedInAnnotation = burned_in
    pixels = np.asarray(pixels)
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def src_of(path: Path, modality: str = "CT", classes: list[str] | None = None) -> SourceConfig:
    return SourceConfig(path=str(path), modality=Modality(modality), classes=classes or ["HeadCT"])


def read_all(src: SourceConfig, path: Path, root: Path) -> tuple[list, list]:
    rejected: list[tuple[str, str]] = []
    recs = list(read_dicom(src, path, lambda what, why: rejected.append((what, why)), root))
    return recs, rejected


# --- the bundled real files ---------------------------------------------------------------

def test_real_ct_is_rescaled_to_hounsfield_units():
    ds = pydicom.dcmread(SAMPLES / "CT_small.dcm")
    (rec,), _ = read_all(src_of(SAMPLES / "CT_small.dcm"), SAMPLES / "CT_small.dcm", SAMPLES)
    expected = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert rec.units == "HU" and rec.image.dtype == np.float32
    np.testing.assert_array_equal(rec.image, expected)


def test_real_multiframe_yields_one_image_per_frame_in_one_volume():
    recs, _ = read_all(src_of(SAMPLES, "MR", ["brain"]), SAMPLES / "emri_small.dcm", SAMPLES)
    assert len(recs) == 10
    assert [r.frame for r in recs] == list(range(10))
    assert len({r.volume_id for r in recs}) == 1 and len({r.id for r in recs}) == 10
    frames = pydicom.dcmread(SAMPLES / "emri_small.dcm").pixel_array
    np.testing.assert_array_equal(np.stack([r.image for r in recs]), frames)
    assert all(r.units == "raw" for r in recs)


def test_real_mr_folder_keeps_mr_and_quarantines_other_modalities():
    recs, rejected = read_all(src_of(SAMPLES, "MR", ["MR"]), SAMPLES, SAMPLES)
    # 1 + 1 + 10 MR images; the two CT files do not match the source's declared modality
    assert len(recs) == 12
    assert sorted(w for w, _ in rejected) == ["CT_head_CQ500_693_UNCI.dcm", "CT_small.dcm"]
    assert all("Modality CT" in why for _, why in rejected)


def test_real_siemens_file_is_fully_deidentified(tmp_path: Path):
    ds = pydicom.dcmread(SAMPLES / "MR-SIEMENS-DICOM-WithOverlays.dcm")
    originals = [str(ds.PatientName), ds.PatientID, ds.InstitutionName, ds.InstitutionAddress,
                 ds.SOPInstanceUID, ds.StudyInstanceUID, ds.AccessionNumber]
    before = find_identifiers(ds)
    assert {"PatientName", "PatientID", "InstitutionName", "StudyDate", "SOPInstanceUID"} <= set(before)
    assert any(b.startswith("private tag") for b in before) and any(b.startswith("overlay") for b in before)
    pixels = ds.pixel_array.copy()
    deidentify(ds)
    assert find_identifiers(ds, known=originals) == []
    out = tmp_path / "deid.dcm"
    ds.save_as(out)
    raw = out.read_bytes()
    for value in originals:
        assert value.encode() not in raw, value
    again = pydicom.dcmread(out)
    np.testing.assert_array_equal(again.pixel_array, pixels)  # pixels and geometry survive
    assert again.PatientIdentityRemoved == "YES" and again.SOPClassUID == MR_IMAGE


# --- files written from real bundled images -----------------------------------------------

def test_written_ct_hu_values_follow_slope_and_intercept(tmp_path: Path):
    stored = real_images("mednist_ct_small.npz", 1)[0].astype(np.int16) * 4
    f = write_dicom(tmp_path / "ct.dcm", stored, slope=2.0, intercept=-1024.0)
    (rec,), _ = read_all(src_of(f), f, tmp_path)
    np.testing.assert_array_equal(rec.image, stored.astype(np.float32) * 2 - 1024)
    assert rec.units == "HU"


def test_monochrome1_is_inverted_so_bright_means_dense(tmp_path: Path):
    stored = real_images("mednist_breastmri_small.npz", 1)[0].astype(np.uint16) * 16  # 12-bit range
    m1 = write_dicom(tmp_path / "m1.dcm", stored, modality="MR", photometric="MONOCHROME1", bits_stored=12, slope=None)
    m2 = write_dicom(tmp_path / "m2.dcm", stored, modality="MR", instance=2, bits_stored=12, slope=None)
    (r1,), _ = read_all(src_of(m1, "MR"), m1, tmp_path)
    (r2,), _ = read_all(src_of(m2, "MR"), m2, tmp_path)
    np.testing.assert_array_equal(r1.image, 4095 - stored)
    np.testing.assert_array_equal(r2.image, stored)
    assert r1.image.dtype == np.uint16


def test_monochrome1_ct_in_hu_keeps_physical_values(tmp_path: Path):
    # HU are physical (bone high, air low) whatever the display convention: not inverted
    stored = real_images("mednist_ct_small.npz", 1)[0].astype(np.int16)
    f = write_dicom(tmp_path / "ct.dcm", stored, photometric="MONOCHROME1")
    (rec,), _ = read_all(src_of(f), f, tmp_path)
    np.testing.assert_array_equal(rec.image, stored.astype(np.float32) - 1024)


def test_written_multiframe_ct_gives_each_frame_in_hu(tmp_path: Path):
    stored = real_images("mednist_ct_small.npz", 3).astype(np.int16)
    f = write_dicom(tmp_path / "mf.dcm", stored)
    recs, _ = read_all(src_of(f), f, tmp_path)
    assert [r.frame for r in recs] == [0, 1, 2]
    np.testing.assert_array_equal(np.stack([r.image for r in recs]), stored.astype(np.float32) - 1024)


def test_series_is_grouped_by_hashed_uid_and_sorted_by_position(tmp_path: Path):
    slices = real_images("mednist_ct_small.npz", 4).astype(np.int16)
    zs = [30.0, 10.0, 40.0, 20.0]
    for i, (img, z) in enumerate(zip(slices, zs, strict=True)):
        # file names and instance numbers deliberately out of anatomical order
        write_dicom(tmp_path / "series" / f"f{9 - i}.dcm", img, instance=i + 1, z=z)
    other = "1.2.826.0.1.3680043.8.498.99887766554433221"
    write_dicom(tmp_path / "series" / "other.dcm", slices[0], series_uid=other)
    recs, rejected = read_all(src_of(tmp_path), tmp_path / "series", tmp_path)
    assert not rejected
    vol = pseudonym(SERIES_UID, "series")
    series = [r for r in recs if r.volume_id == vol]
    assert [r.frame for r in series] == [0, 1, 2, 3]
    order = np.argsort(zs)
    np.testing.assert_array_equal(np.stack([r.image for r in series]), slices[order].astype(np.float32) - 1024)
    assert {r.volume_id for r in recs} == {vol, pseudonym(other, "series")}
    for r in recs:  # ids are hashes, never the UIDs
        assert SERIES_UID not in r.id + r.volume_id and "3680043" not in r.id + r.volume_id + r.source_file


def test_series_without_positions_sorts_by_instance_number(tmp_path: Path):
    slices = real_images("mednist_ct_small.npz", 3, start=10).astype(np.int16)
    for i, inst in enumerate([3, 1, 2]):
        write_dicom(tmp_path / f"s{i}.dcm", slices[i], instance=inst)
    recs, _ = read_all(src_of(tmp_path), tmp_path, tmp_path)
    np.testing.assert_array_equal(np.stack([r.image for r in recs]), slices[[1, 2, 0]].astype(np.float32) - 1024)


@pytest.mark.parametrize(("sop_class", "modality", "flag", "expected"), [
    (CT_IMAGE, "CT", "YES", True),
    (CT_IMAGE, "CT", "NO", False),
    (CT_IMAGE, "CT", None, False),
    (SECONDARY_CAPTURE, "OT", None, True),  # secondary capture without the tag: possibly burned in
])
def test_burned_in_annotation_is_flagged(tmp_path: Path, sop_class, modality, flag, expected):
    img = real_images("mednist_ct_small.npz", 1)[0].astype(np.int16)
    f = write_dicom(tmp_path / "x.dcm", img, modality=modality, sop_class=sop_class, burned_in=flag,
                    slope=None if modality != "CT" else 1.0)
    (rec,), _ = read_all(src_of(f), f, tmp_path)
    assert rec.burned_in_annotation is expected


def test_corrupt_files_in_a_folder_are_quarantined_a_single_one_is_an_error(tmp_path: Path):
    img = real_images("mednist_ct_small.npz", 1)[0].astype(np.int16)
    good = write_dicom(tmp_path / "d" / "good.dcm", img)
    raw = good.read_bytes()
    (tmp_path / "d" / "truncated.dcm").write_bytes(raw[: len(raw) - 3000])  # pixel data cut short
    (tmp_path / "d" / "notes.dcm").write_text("not a dicom file at all\n" * 20)
    recs, rejected = read_all(src_of(tmp_path), tmp_path / "d", tmp_path)
    assert len(recs) == 1
    reasons = dict(rejected)
    assert set(reasons) == {"d/truncated.dcm", "d/notes.dcm"}
    assert "pixel data" in reasons["d/truncated.dcm"] and "not" in reasons["d/notes.dcm"]
    with pytest.raises(InputError, match=r"notes\.dcm: "):
        list(read_source(SourceConfig(path="x", format="dicom"), tmp_path / "d" / "notes.dcm", print, tmp_path))
    with pytest.raises(InputError, match=r"truncated\.dcm: pixel data cannot be decoded"):
        list(read_dicom(src_of(tmp_path), tmp_path / "d" / "truncated.dcm", print, tmp_path))


def test_no_identifier_reaches_any_ingest_output(tmp_path: Path):
    imgs = real_images("mednist_ct_small.npz", 3, start=20).astype(np.int16)
    # a typical PACS export layout: patient name/date and UIDs in folder and file names
    series_dir = tmp_path / "in" / "Doe_Jane_19700101" / SERIES_UID
    for i, img in enumerate(imgs):
        write_dicom(series_dir / f"{SERIES_UID}.{i + 1}.dcm", img, instance=i + 1, z=float(i))
    (series_dir / "broken.dcm").write_bytes(b"DICM" * 10)
    (tmp_path / "in" / "Jane Doe").mkdir()
    (tmp_path / "in" / "Jane Doe" / "readme.txt").write_text("exported by PACS")  # not DICOM, named folder
    out = tmp_path / "out"
    res = ingest_sources([src_of(Path("in"))], tmp_path, out)
    assert res.n_images == 3 and res.n_quarantined == 2
    secrets = [*IDENTIFIERS.values(), SERIES_UID, PRIVATE_VALUE, "Doe", "Jane", "Elsewhere", "Gregory"]
    import pandas as pd

    cells = " ".join(pd.read_parquet(out / "manifest.parquet").astype(str).to_numpy().ravel())
    texts = cells + "".join(p.read_text() for p in out.rglob("*") if p.suffix in (".json", ".jsonl"))
    blobs = [p.read_bytes() for p in out.rglob("*") if p.is_file()]
    for s in secrets:
        assert s not in texts, s
        assert not any(s.encode() in b for b in blobs), s
    quarantined = [json.loads(line) for line in (out / "quarantine" / "records.jsonl").read_text().splitlines()]
    assert sorted(Path(q["record"]).name for q in quarantined) == ["broken.dcm", "readme.txt"]


def test_scrub_path_hides_uids_dates_and_names():
    p = scrub_path(f"Doe_Jane/{SERIES_UID}/2024-03-14/IM0001.dcm", ["Doe", "Jane"])
    assert p.endswith("/IM0001.dcm") and "Doe" not in p and SERIES_UID not in p and "2024" not in p
    assert scrub_path("ct/head/slice_01.dcm") == "ct/head/slice_01.dcm"


def test_find_identifiers_catches_a_surviving_original_value(tmp_path: Path):
    img = real_images("mednist_ct_small.npz", 1)[0].astype(np.int16)
    ds = pydicom.dcmread(write_dicom(tmp_path / "x.dcm", img))
    deidentify(ds)
    assert find_identifiers(ds, known=IDENTIFIERS.values()) == []
    assert ds.SeriesInstanceUID != SERIES_UID
    assert deidentify(pydicom.dcmread(tmp_path / "x.dcm")).SeriesInstanceUID == ds.SeriesInstanceUID  # stable
    ds.ReferencedSOPInstanceUID = STUDY_UID  # an original UID slipped back in
    assert find_identifiers(ds, known=[STUDY_UID]) == ["ReferencedSOPInstanceUID"]
