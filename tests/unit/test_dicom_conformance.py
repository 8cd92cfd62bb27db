"""Every DICOM the exporter writes passes the standard's validator and opens in dcmtk.

``dciodvfy`` (Debian ``dicom3tools``) checks each file against its IOD (Secondary Capture Image) and
the VR rules; any line with ``Error`` or ``Warning`` fails. ``dcmdump``/``dcm2pnm`` (Debian ``dcmtk``)
must read the files and render exactly the stored pixels. ``infra/scripts/system-deps.sh`` (run by
``make test``) installs both packages.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medsynth import export


def _tool(name: str, package: str) -> str:
    """The path of ``name``; when it is absent, skip, except as root (CI), where `make system-deps`
    installs it, so a missing tool there is a failure (the same rule as the PostgreSQL tests)."""
    path = shutil.which(name)
    if path:
        return path
    why = f"{name} not installed (Debian package {package}; `make system-deps` installs it as root)"
    if os.geteuid() == 0:
        pytest.fail(why + ": as root a missing validator is a failure, not a skip")
    pytest.skip(why)


def _record(**kw) -> export.GenerationRecord:
    base = dict(model_name="medsynth-ct-cgan", model_version="3", seed=42, labels=[0, 1, 2, 0],
                label_names=["AbdomenCT", "ChestCT", "HeadCT", "AbdomenCT"], truncation=0.8, count=4,
                resolution=64, modality="CT", dataset="ct")
    return export.GenerationRecord(**{**base, **kw})


# metadata a user or registry could hand over: non-ASCII, backslash (the DICOM value separator),
# control characters, names far over the LO/ST byte limits
AWKWARD = dict(model_name="Gehirn-Ödem\\脳モデル\n" + "ü" * 80, model_version="2\\beta", labels=[0],
               label_names=["Ödem\x07" + "脳" * 600], count=1)


def _cases(data_dir: Path) -> dict[str, tuple[np.ndarray, export.GenerationRecord]]:
    """(uint8 image, record) pairs covering every shape and kind of metadata the exporter meets."""
    rng = np.random.default_rng(0)
    with np.load(data_dir / "pneumoniamnist.npz") as z:
        xr28 = z["test_images"][0]
    return {
        "xr-28px-real": (xr28, _record(labels=[1], label_names=["pneumonia"], count=1, resolution=28)),
        "odd-57px": (rng.integers(0, 256, (57, 57), dtype=np.uint8), _record()),  # odd pixel-data length
        "non-square": (rng.integers(0, 256, (40, 70), dtype=np.uint8), _record()),
        "300px-no-enlarging": (rng.integers(0, 256, (300, 300), dtype=np.uint8), _record()),
        "unconditional": (rng.integers(0, 256, (64, 64), dtype=np.uint8), _record(labels=[], label_names=[])),
        "awkward-metadata": (rng.integers(0, 256, (64, 64), dtype=np.uint8), _record(**AWKWARD)),
    }


@pytest.fixture
def exported(tmp_path: Path, data_dir: Path) -> list[Path]:
    """Files written through the real exporter: the app's zip (a 4-image, 3-class CT batch) and
    :func:`export.dicom_bytes` called directly (as the command line does) on every case above."""
    with np.load(data_dir / "mednist_ct_small.npz") as z:
        batch = z["test_images"][:4][:, None].astype(np.float32) / 127.5 - 1.0
    files = []
    with zipfile.ZipFile(io.BytesIO(export.build_zip(batch, _record(), png=False))) as zf:
        for name in sorted(n for n in zf.namelist() if n.endswith(".dcm")):
            path = tmp_path / Path(name).name
            path.write_bytes(zf.read(name))
            files.append(path)
    for name, (image, record) in _cases(data_dir).items():
        path = tmp_path / f"{name}.dcm"
        path.write_bytes(export.dicom_bytes(image, record, 0))
        files.append(path)
    assert len(files) == 4 + 6
    return files


def dciodvfy(path: Path) -> tuple[int, str, list[str]]:
    """dciodvfy's exit status, full output and every line that reports an error or a warning."""
    res = subprocess.run([_tool("dciodvfy", "dicom3tools"), str(path)], capture_output=True, timeout=120)
    out = (res.stdout + res.stderr).decode("utf-8", errors="replace")
    return res.returncode, out, [line for line in out.splitlines() if re.search(r"\b(Error|Warning)\b", line)]


def test_dciodvfy_reports_no_error_and_no_warning(exported):
    for path in exported:
        rc, out, problems = dciodvfy(path)
        assert not problems, f"{path.name}: dciodvfy says\n{out}"
        assert rc == 0 and "SCImage" in out, f"{path.name}: not verified as Secondary Capture\n{out}"


def test_dciodvfy_check_catches_what_the_issue_reported(tmp_path, data_dir):
    """The check bites: the file as exported before (bare PatientName, no PatientOrientation, no
    laterality) fails on exactly the findings of issue 17."""
    image, record = _cases(data_dir)["odd-57px"]
    ds = pydicom.dcmread(io.BytesIO(export.dicom_bytes(image, record, 0)))
    ds.PatientName = "SYNTHETIC"
    del ds.PatientOrientation, ds.ImageLaterality
    ds.save_as(tmp_path / "old.dcm", enforce_file_format=True)
    _, out, problems = dciodvfy(tmp_path / "old.dcm")
    assert len(problems) == 3, out
    assert "Retired Person Name form" in out and "<Laterality>" in out and "<PatientOrientation>" in out


def test_dcmtk_reads_and_renders_the_stored_pixels(exported, tmp_path):
    dcmdump, dcm2pnm = _tool("dcmdump", "dcmtk"), _tool("dcm2pnm", "dcmtk")
    for path in exported:
        dump = subprocess.run([dcmdump, str(path)], capture_output=True, text=True, errors="replace", timeout=120)
        assert dump.returncode == 0 and not dump.stderr.strip(), f"{path.name}: dcmdump\n{dump.stderr}"
        assert "SecondaryCaptureImageStorage" in dump.stdout and "[SYNTHETIC^]" in dump.stdout
        ds = pydicom.dcmread(path)
        stored = ds.pixel_array
        # -il: plain (non-interlaced) PNG; -O: overlays off, so the rendering is the stored pixels
        plain, shown = tmp_path / f"{path.stem}-plain.png", tmp_path / f"{path.stem}-overlay.png"
        for args, out in ((["-O"], plain), ([], shown)):
            res = subprocess.run([dcm2pnm, "--write-png", "-il", *args, str(path), str(out)], capture_output=True,
                                 text=True, errors="replace", timeout=120)
            assert res.returncode == 0 and not res.stderr.strip(), f"{path.name}: dcm2pnm\n{res.stderr}"
        from PIL import Image

        assert np.array_equal(np.asarray(Image.open(plain)), stored), path.name
        # with overlays on (dcm2pnm's default) the overlay's SYNTHETIC shows in the top band, white
        with_overlay = np.asarray(Image.open(shown))
        changed = with_overlay != stored
        assert changed.any() and not changed[export.FOOTER_ROWS:].any(), path.name
        assert (with_overlay[changed] == 255).all(), path.name


def test_awkward_metadata_is_made_valid(data_dir):
    """Non-ASCII gets a character set (UTF-8), backslashes do not split values, limits hold in bytes."""
    image, record = _cases(data_dir)["awkward-metadata"]
    ds = pydicom.dcmread(io.BytesIO(export.dicom_bytes(image, record, 0)))
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    for keyword, limit in (("StudyDescription", 64), ("SeriesDescription", 64), ("DerivationDescription", 1024)):
        value = ds.data_element(keyword).value
        assert isinstance(value, str) and len(value.encode("utf-8")) <= limit and "\\" not in value, keyword
    assert "Ödem" in ds.SeriesDescription and "\x07" not in ds.DerivationDescription
    plain = pydicom.dcmread(io.BytesIO(export.dicom_bytes(image, _record(), 0)))
    assert "SpecificCharacterSet" not in plain  # ASCII-only files stay in the default repertoire
