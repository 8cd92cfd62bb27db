"""Data expectations on what ingest makes of the bundled real data (MedNIST CT npz, real DICOM).

Each test names the risk it guards against."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medsynth.components.ingest import ingest_sources
from medsynth.dataset import CanonicalDataset
from medsynth.readers import Modality, SourceConfig

DATA = Path(__file__).resolve().parents[2] / "data"
CT_CLASSES = ["AbdomenCT", "ChestCT", "HeadCT"]


@pytest.fixture(scope="module")
def ct(tmp_path_factory) -> CanonicalDataset:
    src = SourceConfig(path="mednist_ct_small.npz", modality=Modality.CT, classes=CT_CLASSES)
    out = tmp_path_factory.mktemp("ct") / "ingest"
    ingest_sources([src], DATA, out)
    return CanonicalDataset(out)


@pytest.fixture(scope="module")
def dicom(tmp_path_factory) -> CanonicalDataset:
    out = tmp_path_factory.mktemp("dicom")
    ingest_sources([SourceConfig(path="dicom_samples", modality=Modality.CT, classes=["HeadCT"])], DATA, out / "ct")
    ingest_sources([SourceConfig(path="dicom_samples", modality=Modality.MR, classes=["MR"])], DATA, out / "mr")
    return CanonicalDataset(out / "ct"), CanonicalDataset(out / "mr")


def test_ct_counts_per_split_and_class(ct):
    # Risk: a wrong or re-drawn subset, lost splits, or labels shifted against class names.
    counts = ct.manifest.groupby(["split", "class_name"]).size().unstack()
    assert counts.loc["train"].tolist() == [2000] * 3
    assert counts.loc["val"].tolist() == [250] * 3 and counts.loc["test"].tolist() == [250] * 3
    assert (ct.manifest["label"] == ct.manifest["class_name"].map(CT_CLASSES.index)).all()


def test_ct_shards_match_manifest_hashes(ct):
    # Risk: manifest rows pointing at the wrong image in the shards (every later step would
    # silently train on mislabelled pixels).
    m = ct.manifest
    assert m["id"].is_unique
    for row in np.random.default_rng(0).choice(len(m), 50, replace=False):
        img = ct.image(int(row))
        assert hashlib.sha256(np.ascontiguousarray(img).tobytes()).hexdigest() == m.iloc[row]["sha256"]
    assert set(m["dtype"]) == {"uint8"} and set(m["height"]) == {64} and set(m["width"]) == {64}
    assert (m["nan_count"] == 0).all() and (m["units"] == "raw").all()


def test_ct_classes_look_different(ct):
    # Risk: a class whose images are all blank or identical (a broken subset) would still "train".
    m = ct.manifest
    assert (m["std"] > 1).mean() > 0.99
    means = m.groupby("class_name")["mean"].mean()
    assert means.max() - means.min() > 5


def test_dicom_ct_is_in_hounsfield_units(dicom):
    # Risk: rescale skipped (tissue near +1024) or applied twice (near -1000): the CT window
    # would show noise. Water, brain and soft tissue sit within +-100 HU.
    ct, _ = dicom
    assert len(ct) == 2 and set(ct.manifest["units"]) == {"HU"}
    for i in range(len(ct)):
        img = ct.image(i)
        soft = np.mean((img > -100) & (img < 100))
        assert soft > 0.1, (ct.manifest.iloc[i]["source_file"], soft)
        assert img.max() < 4000


def test_dicom_mr_frames_and_volumes(dicom):
    # Risk: multi-frame files collapsed to one image, or frames of one volume split apart.
    _, mr = dicom
    m = mr.manifest
    assert len(m) == 12 and set(m["units"]) == {"raw"}
    emri = m[m["source_file"].str.endswith("emri_small.dcm")]
    assert len(emri) == 10 and emri["volume_id"].nunique() == 1 and sorted(emri["frame"]) == list(range(10))
    assert m["volume_id"].nunique() == 3


def test_no_identity_of_the_real_dicom_samples_in_the_manifest(dicom):
    # Risk: patient identity (names, ids, UIDs, dates) reaching a stored artifact.
    identifiers = set()
    for f in (DATA / "dicom_samples").glob("*.dcm"):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        for kw in ("PatientName", "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                   "AccessionNumber", "InstitutionName"):
            v = str(ds.get(kw, "") or "").strip()
            if len(v) >= 4:
                identifiers.add(v)
    assert len(identifiers) >= 10
    for ds in dicom:
        text = " ".join(ds.manifest.astype(str).to_numpy().ravel())
        for v in identifiers:
            assert v not in text, v
        assert all(re.fullmatch(r"[0-9a-f]{16}", v) for v in ds.manifest["volume_id"])


def test_real_samples_are_not_flagged_as_burned_in(dicom):
    # Risk: over-flagging would later drop real, clean scans (all five are plain CT/MR acquisitions).
    for ds in dicom:
        assert not ds.manifest["burned_in_annotation"].any()
