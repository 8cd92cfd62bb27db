"""Ingest as a user meets it: `medsynth ingest` on good and bad real inputs, one clear error line
and a non-zero exit for each bad one, the previous good output never damaged, NaNs counted."""

from __future__ import annotations

import functools
import json
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medsynth.cli import main
from medsynth.components.ingest import ingest_sources
from medsynth.dataset import CanonicalDataset
from medsynth.fileio import sha256_tree
from medsynth.readers import Modality, SourceConfig

DATA = Path(__file__).resolve().parents[2] / "data"


@functools.cache
def xrays() -> tuple[np.ndarray, np.ndarray]:
    with np.load(DATA / "pneumoniamnist.npz") as z:
        return z["test_images"][:40], z["test_labels"][:40]


def small_npz(path: Path, n: int = 20) -> Path:
    """A MedMNIST-layout archive of n real X-rays."""
    imgs, labels = xrays()
    np.savez(path, train_images=imgs[:n], train_labels=labels[:n], test_images=imgs[n : 2 * n],
             test_labels=labels[n : 2 * n])
    return path


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated project folder. `ingest --input` never touches MLflow, so this skips the
    conftest's project_home (whose MLflow store template costs seconds to build)."""
    monkeypatch.setenv("MEDSYNTH_HOME", str(tmp_path))
    monkeypatch.setenv("MEDSYNTH_DATA_DIR", str(DATA))
    monkeypatch.setenv("MEDSYNTH_QUIET", "1")
    return tmp_path


def cli(repo: Path, *args: str) -> int:
    """`medsynth ingest`; an --input is X-ray unless the call says otherwise (--modality is required)."""
    modality = ["--modality", "XR"] if "--input" in args and "--modality" not in args else []
    return main(["ingest", "--params", str(repo / "params.yaml"), *args, *modality])


def one_error_line(capsys: pytest.CaptureFixture) -> str:
    """The single stderr line of a failed command (capsys or capfd)."""
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("medsynth: error: ")
    return err


def _bad_inputs(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (bad input, words the error must contain)."""
    (tmp / "notes.txt").write_text("patient list\n")
    (tmp / "empty").mkdir()
    good = small_npz(tmp / "good.npz").read_bytes()
    (tmp / "truncated.npz").write_bytes(good[: len(good) // 2])
    crc = bytearray(good)
    crc[200:260] = bytes(60)  # damage the first array's bytes: its CRC no longer matches
    (tmp / "crc.npz").write_bytes(bytes(crc))
    imgs, labels = xrays()
    np.savez(tmp / "rgb.npz", train_images=np.stack([imgs] * 3, axis=-1), train_labels=labels)
    np.savez(tmp / "flat.npz", train_images=imgs.reshape(len(imgs), -1), train_labels=labels)
    (tmp / "scan.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage" * 30)
    nib.save(nib.Nifti1Image(imgs[:3].transpose(1, 2, 0).copy(), np.eye(4)), tmp / "vol.nii")
    raw = bytearray((tmp / "vol.nii").read_bytes())
    raw[0:4] = struct.pack("<i", 999)
    (tmp / "vol.nii").write_bytes(bytes(raw))
    return {
        "unknown_type": (tmp / "notes.txt", "unknown file type"),
        "empty_folder": (tmp / "empty", "empty folder"),
        "missing": (tmp / "nowhere.npz", "no such file"),
        "truncated_npz": (tmp / "truncated.npz", "not a valid .npz"),
        "crc_npz": (tmp / "crc.npz", "cannot be read"),
        "rgb_npz": (tmp / "rgb.npz", "expected [N, H, W] grayscale"),
        "flat_npz": (tmp / "flat.npz", "expected [N, H, W] grayscale"),
        "corrupt_dicom": (tmp / "scan.dcm", "DICOM"),
        "nifti_header": (tmp / "vol.nii", "wrong NIfTI header"),
    }


BAD = ["unknown_type", "empty_folder", "missing", "truncated_npz", "crc_npz", "rgb_npz", "flat_npz",
       "corrupt_dicom", "nifti_header"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_and_nonzero_exit(home, repo, tmp_path, capfd, recwarn, case):
    bad, words = _bad_inputs(tmp_path)[case]
    capfd.readouterr()
    rc = cli(repo, "--input", str(bad), "--out", str(tmp_path / "out"))
    err = one_error_line(capfd)  # file-descriptor capture: library log handlers would show up too
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]  # warnings print as more lines
    assert rc != 0
    assert bad.name in err and words in err, err
    assert not (tmp_path / "out").exists()


def test_failed_ingest_leaves_the_previous_good_output_untouched(home, repo, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli(repo, "--input", str(small_npz(tmp_path / "good.npz")), "--classes", "normal,pneumonia",
               "--out", str(out)) == 0
    before = sha256_tree(out)
    # a folder whose first archive is good and second corrupt: records were already read when it fails
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    small_npz(mixed / "a.npz")
    (mixed / "b.npz").write_bytes((mixed / "a.npz").read_bytes()[:500])
    listing = sorted(p.name for p in tmp_path.iterdir())
    capsys.readouterr()
    rc = cli(repo, "--input", str(mixed), "--classes", "normal,pneumonia", "--out", str(out))
    assert rc != 0 and "b.npz" in one_error_line(capsys)
    assert sha256_tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == listing  # no temporary folder left behind
    assert len(CanonicalDataset(out)) == 40


def test_good_dicom_folder_through_the_cli(home, repo, tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli(repo, "--input", str(DATA / "dicom_samples"), "--modality", "MR", "--classes", "brainMR",
             "--out", str(out))
    assert rc == 0, capsys.readouterr().err
    assert "ingested 12 images (2 quarantined)" in capsys.readouterr().out
    ds = CanonicalDataset(out)
    assert set(ds.manifest["source_format"]) == {"dicom"}
    q = [json.loads(line) for line in (out / "quarantine" / "records.jsonl").read_text().splitlines()]
    assert {Path(r["record"]).name for r in q} == {"CT_small.dcm", "CT_head_CQ500_693_UNCI.dcm"}


def test_nan_images_are_ingested_with_the_right_nan_count(tmp_path: Path):
    imgs = xrays()[0][:6].astype(np.float32) / 255.0
    imgs[1, 0, :5] = np.nan
    imgs[4, 3, 3] = np.nan
    np.savez(tmp_path / "f.npz", train_images=imgs)
    src = SourceConfig(path="f.npz", modality=Modality.XR, classes=["CXR"])
    res = ingest_sources([src], tmp_path, tmp_path / "out")
    assert res.n_images == 6 and res.n_quarantined == 0
    m = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert m["nan_count"].tolist() == [0, 5, 0, 0, 1, 0]
    assert m["dtype"].unique().tolist() == ["float32"]
    assert np.isfinite(m.loc[1, ["min", "max", "mean"]].astype(float)).all()  # stats over the finite pixels
    np.testing.assert_array_equal(CanonicalDataset(tmp_path / "out").image(1), imgs[1])  # NaNs kept as they are


def test_mixed_sources_in_one_dataset(tmp_path: Path):
    from PIL import Image

    imgs, labels = xrays()
    for i in range(6):
        d = tmp_path / "png" / ["normal", "pneumonia"][int(labels[i, 0])]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(imgs[i]).save(d / f"{i}.png")
    small_npz(tmp_path / "x.npz", 5)
    sources = [
        SourceConfig(path="x.npz", modality=Modality.XR, classes=["normal", "pneumonia"]),
        SourceConfig(path="png", modality=Modality.XR, classes=["normal", "pneumonia"], split="train"),
    ]
    res = ingest_sources(sources, tmp_path, tmp_path / "out")
    m = CanonicalDataset(tmp_path / "out").manifest
    assert res.n_images == 16 and m["id"].is_unique
    png = m[m["source_format"] == "image"]
    assert (png["split"] == "train").all()  # the source's split fills in for folders without one
    assert sorted(png["class_name"]) == sorted(["normal", "pneumonia"][int(v)] for v in labels[:6, 0])


def test_modality_is_a_dicom_code_required_unless_dicom_says_it(home, repo, tmp_path, capsys):
    npz = small_npz(tmp_path / "Knee Ultrasound.npz")
    capsys.readouterr()
    assert main(["ingest", "--params", str(repo / "params.yaml"), "--input", str(npz), "--out", str(tmp_path / "o")]) == 2
    err = one_error_line(capsys)
    assert "--modality is required" in err and "XR, CR, DX, CT, MR, US, MG, PT" in err
    assert cli(repo, "--input", str(npz), "--modality", "us", "--classes", "a,b", "--out", str(tmp_path / "us")) == 0
    assert set(CanonicalDataset(tmp_path / "us").manifest["modality"]) == {"US"}
    report = json.loads((tmp_path / "us" / "ingest_report.json").read_text())
    assert report["dataset"] == "input-knee-ultrasound"  # named after the input, never a bundled set
    dcm = tmp_path / "dcm"
    dcm.mkdir()
    (dcm / "a.dcm").write_bytes((DATA / "dicom_samples" / "CT_small.dcm").read_bytes())
    assert main(["ingest", "--params", str(repo / "params.yaml"), "--input", str(dcm), "--classes", "head",
                 "--out", str(tmp_path / "ct")]) == 0  # the DICOM file says CT
    assert set(CanonicalDataset(tmp_path / "ct").manifest["modality"]) == {"CT"}


def test_missing_input_hint_is_about_the_path(home, repo, tmp_path, capsys):
    assert cli(repo, "--input", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")) == 2
    err = one_error_line(capsys)
    assert "no such file or folder" in err and "MEDSYNTH_DATA_DIR" not in err


def test_home_moves_state_not_the_bundled_data(tmp_path, monkeypatch):
    from medsynth.project import ProjectConfig

    monkeypatch.setenv("MEDSYNTH_HOME", str(tmp_path / "elsewhere"))
    monkeypatch.delenv("MEDSYNTH_DATA_DIR", raising=False)
    project = ProjectConfig()
    assert project.data_path() == DATA and (project.data_path() / "mednist_ct_small.npz").is_file()
    assert project.artifacts_path() == tmp_path / "elsewhere" / "artifacts"
