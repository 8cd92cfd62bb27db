"""Exports are unmistakably synthetic: file names, PNG metadata, DICOM tags, burned-in marker, no identity."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pydicom
import pytest

from medsynth import export
from medsynth.imaging import uint8_frames


@pytest.fixture
def real_batch(data_dir) -> np.ndarray:
    """Four real 64 px CT images as [-1, 1] floats: the exporter must not care where pixels came from."""
    with np.load(data_dir / "mednist_ct_small.npz") as z:
        x = z["test_images"][:4]  # uint8 [4, 64, 64]
    return x[:, None].astype(np.float32) / 127.5 - 1.0


@pytest.fixture
def record() -> export.GenerationRecord:
    return export.GenerationRecord(
        model_name="medsynth-ct-cgan", model_version="3", seed=42, labels=[0, 1, 2, 0],
        label_names=["AbdomenCT", "ChestCT", "HeadCT", "AbdomenCT"], truncation=0.8, count=4,
        resolution=64, modality="CT", dataset="ct",
    )


def test_to_uint8_maps_range_and_clips():
    x = np.array([[[[-1.0, 0.0], [1.0, 2.0]]]], dtype=np.float32)
    assert uint8_frames(x).tolist() == [[[0, 128], [255, 255]]]


def test_zip_holds_marked_pngs_dicoms_and_parameters(real_batch, record):
    data = export.build_zip(real_batch, record)
    zf = zipfile.ZipFile(io.BytesIO(data))
    names = zf.namelist()
    pngs = [n for n in names if n.endswith(".png")]
    dcms = [n for n in names if n.endswith(".dcm")]
    assert len(pngs) == len(dcms) == 4
    assert all(n.split("/")[-1].startswith("SYNTHETIC_") for n in pngs + dcms)
    params = json.loads(zf.read("generation.json"))
    assert params["synthetic"] is True
    assert (params["model_name"], params["model_version"], params["seed"]) == ("medsynth-ct-cgan", "3", 42)
    assert params["labels"] == [0, 1, 2, 0] and params["truncation"] == 0.8
    # PNG: pixels round-trip exactly, metadata says synthetic and how it was made
    from PIL import Image

    first = sorted(pngs)[1]
    text = export.read_png_text(zf.read(first))
    assert text["Synthetic"] == "true" and "SYNTHETIC" in text["Description"]
    meta = json.loads(text["medsynth.generation"])
    assert meta["index"] == 1 and meta["label_name"] == "ChestCT" and meta["seed"] == 42
    px = np.asarray(Image.open(io.BytesIO(zf.read(first))))
    # by default the pixels are enlarged (nearest neighbour) and carry the DICOMs' visible SYNTHETIC band
    assert np.array_equal(px, export.burn_in(uint8_frames(real_batch)[1]))
    band = px[-export.FOOTER_ROWS:]
    assert band.max() == 255 and (band == 255).mean() > 0.02  # the word is drawn, so a screenshot shows it
    # without the band: exactly the generated pixels
    raw = zipfile.ZipFile(io.BytesIO(export.build_zip(real_batch, record, dicom=False, band=False)))
    px = np.asarray(Image.open(io.BytesIO(raw.read(first))))
    assert np.array_equal(px, uint8_frames(real_batch)[1])
    assert export.read_png_text(raw.read(first))["Synthetic"] == "true"


def test_dicom_is_secondary_capture_marked_synthetic_without_identity(real_batch, record):
    zf = zipfile.ZipFile(io.BytesIO(export.build_zip(real_batch, record, png=False)))
    dss = [pydicom.dcmread(io.BytesIO(zf.read(n))) for n in sorted(zf.namelist()) if n.endswith(".dcm")]
    ds = dss[0]
    assert ds.SOPClassUID == export.SC_SOP_CLASS == ds.file_meta.MediaStorageSOPClassUID
    assert list(ds.ImageType) == ["DERIVED", "SECONDARY"]
    assert ds.ConversionType == "SYN" and ds.Modality == "OT"
    assert "SYNTHETIC" in ds.SeriesDescription and "SYNTHETIC" in ds.ImageComments
    assert ds.BurnedInAnnotation == "YES"
    assert str(ds.PatientName) == export.PATIENT_NAME == "SYNTHETIC^" and ds.PatientID == "SYNTHETIC"
    assert ds.PatientName.family_name == "SYNTHETIC" and ds.PatientName.given_name == ""
    assert ds.PatientBirthDate == "" and ds.PatientSex == ""
    # what the validator needs (tests/unit/test_dicom_conformance.py runs it): orientation and
    # laterality unknown, Image Laterality standing in for the series' Laterality; times are UTC
    assert ds.PatientOrientation == "" and ds.ImageLaterality == "" and "Laterality" not in ds
    assert ds.TimezoneOffsetFromUTC == "+0000" and "SpecificCharacterSet" not in ds
    # overlay plane carries the marker too
    assert ds[0x60000022].value == "SYNTHETIC" and ds[0x60000010].value == ds.Rows
    # one study and series per export, a fresh instance UID per image, all valid DICOM UIDs
    assert len({d.StudyInstanceUID for d in dss}) == 1 and len({d.SeriesInstanceUID for d in dss}) == 1
    assert len({d.SOPInstanceUID for d in dss}) == 4
    assert all(d.SOPInstanceUID.is_valid for d in dss)
    # the image is there (enlarged by an integer factor), the marker is burned into the footer band
    px = ds.pixel_array
    k = (px.shape[1]) // 64
    assert px.shape == (64 * k + export.FOOTER_ROWS, 64 * k) and 64 * k >= export.DICOM_MIN_SIDE
    assert np.array_equal(px[: 64 * k : k, ::k], uint8_frames(real_batch)[0])
    band = px[64 * k :]
    assert band.max() == 255 and 0.02 < (band > 0).mean() < 0.5  # legible text, not a filled box


def test_two_exports_never_share_uids(real_batch, record):
    def uids(data: bytes) -> set[str]:
        zf = zipfile.ZipFile(io.BytesIO(data))
        ds = pydicom.dcmread(io.BytesIO(zf.read(next(n for n in zf.namelist() if n.endswith(".dcm")))))
        return {ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID}

    assert not uids(export.build_zip(real_batch[:1], record, png=False)) & uids(
        export.build_zip(real_batch[:1], record, png=False))


def test_28px_images_are_enlarged_and_marked(data_dir, record):
    with np.load(data_dir / "pneumoniamnist.npz") as z:
        x = z["test_images"][:1].astype(np.float32) / 127.5 - 1.0
    px = pydicom.dcmread(io.BytesIO(export.dicom_bytes(uint8_frames(x[:, None])[0], record, 0, "1.2.3", "1.2.4"))).pixel_array
    assert px.shape[1] >= export.DICOM_MIN_SIDE and px.shape[1] % 28 == 0


def test_dicom_bytes_alone_makes_fresh_uids_and_wants_uint8(record):
    """The command line calls dicom_bytes directly: without study/series UIDs each file gets fresh ones."""
    image = np.zeros((64, 64), dtype=np.uint8)
    a, b = (pydicom.dcmread(io.BytesIO(export.dicom_bytes(image, record))) for _ in range(2))
    assert a.InstanceNumber == 1 and a.SOPInstanceUID != b.SOPInstanceUID
    assert a.StudyInstanceUID != b.StudyInstanceUID and a.SeriesInstanceUID != b.SeriesInstanceUID
    assert a.StudyInstanceUID.is_valid and a.SeriesInstanceUID.is_valid
    with pytest.raises(ValueError, match="uint8"):
        export.dicom_bytes(image.astype(np.float32), record)
    with pytest.raises(ValueError, match="uint8"):
        export.dicom_bytes(image[None], record)


def test_label_names_and_bad_shapes():
    assert export.label_names([1, 0], ["normal", "pneumonia"]) == ["pneumonia", "normal"]
    assert export.label_names([0, 0], []) == ["unconditional", "unconditional"]
    with pytest.raises(ValueError, match="expected"):
        uint8_frames(np.zeros(5))
