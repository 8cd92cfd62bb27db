"""`medsynth generate`: outputs (npz, PNG, DICOM) marked synthetic, manifest, and one-line errors."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from medsynth.training.kinds import build_generator
from medsynth.training.models import ModelSpec
from medsynth.training.sampler import generator_payload

CLASSES = ["AbdomenCT", "ChestCT", "HeadCT"]


@pytest.fixture(params=["cgan", "ldm"])
def gen_file(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """A tiny untrained generator file of each family (the outputs, not the quality, are under test)."""
    torch.manual_seed(0)
    if request.param == "ldm":
        from medsynth.training.diffusion import DiffusionSpec, LatentDiffusion

        net = LatentDiffusion(DiffusionSpec(resolution=32, num_classes=3, ae_channels=[8, 16], unet_channels=[16, 32],
                                            sample_steps=3)).eval()
    else:
        net = build_generator(ModelSpec(kind="cgan", arch="resize", resolution=32, ngf=8, num_classes=3)).eval()
    path = tmp_path / "generator.pt"
    torch.save(generator_payload(net, CLASSES, ["CT"] * 3), path)
    return path


@dataclass
class Result:
    returncode: int
    stderr: str


@pytest.fixture
def _cli(capsys, monkeypatch, repo):
    """The real command line, in process (the same ``main`` the console script runs)."""
    from medsynth.cli import main

    monkeypatch.chdir(repo)

    def run(*args: str, cwd: Path | None = None) -> Result:
        capsys.readouterr()
        rc = main(["generate", *args])
        return Result(rc, capsys.readouterr().err)

    return run


def test_npz_holds_uint8_images_labels_and_a_manifest(gen_file: Path, tmp_path: Path, project_home: Path, repo, _cli):
    out = tmp_path / "synthetic_ct.npz"
    r = _cli("--n", "10", "--model-uri", str(gen_file), "--seed", "3", "--out", str(out), cwd=repo)
    assert r.returncode == 0, r.stderr
    d = np.load(out)
    assert d["images"].shape == (10, 32, 32) and d["images"].dtype == np.uint8
    assert d["labels"].tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    assert list(d["classes"]) == CLASSES and bool(d["synthetic"])
    man = json.loads(out.with_name("synthetic_ct.manifest.json").read_text())
    assert man["synthetic"] is True and man["seed"] == 3 and man["n"] == 10 and man["model"] == str(gen_file)
    assert man["precision"] in ("fp32", "bf16")
    # same seed, same images
    out2 = tmp_path / "again.npz"
    assert _cli("--n", "10", "--model-uri", str(gen_file), "--seed", "3", "--out", str(out2), cwd=repo).returncode == 0
    assert np.array_equal(np.load(out2)["images"], d["images"])


def test_png_folder_one_class_marked_synthetic(gen_file: Path, tmp_path: Path, project_home: Path, repo, _cli):
    from PIL import Image

    out = tmp_path / "pngs"
    r = _cli("--n", "4", "--model-uri", str(gen_file), "--class", "HeadCT", "--out", str(out), cwd=repo)
    assert r.returncode == 0, r.stderr
    files = sorted(out.glob("*.png"))
    assert len(files) == 4 and all(f.name.startswith("SYNTHETIC_") and "HeadCT" in f.name for f in files)
    with Image.open(files[0]) as im:
        assert im.text["Synthetic"] == "true"
        px = np.asarray(im)
    assert px.shape[0] > px.shape[1]  # the visible SYNTHETIC band under the image
    man = json.loads((out / "manifest.json").read_text())
    assert [f["label"] for f in man["files"]] == ["HeadCT"] * 4


def test_dicom_folder(gen_file: Path, tmp_path: Path, project_home: Path, repo, _cli):
    import pydicom

    out = tmp_path / "dcm"
    assert _cli("--n", "2", "--model-uri", str(gen_file), "--format", "dicom", "--out", str(out),
                cwd=repo).returncode == 0
    ds = pydicom.dcmread(next(out.glob("*.dcm")))
    assert "SYNTHETIC" in ds.SeriesDescription and ds.ConversionType == "SYN"


@pytest.mark.parametrize("args, needle", [
    (["--n", "0"], "--n: must be in 1..10000"),
    (["--n", "20000"], "--n: must be in 1..10000"),
    (["--n", "2", "--class", "Knee"], "unknown class"),
    (["--n", "2", "--truncation", "0"], "--truncation"),
    (["--n", "2", "--format", "png", "--out-npz"], "writes a folder"),
])
def test_bad_arguments_are_one_line_and_non_zero(gen_file, tmp_path, project_home, repo, args, needle, _cli):
    out = str(tmp_path / "x.npz") if "--out-npz" in args else str(tmp_path / "x.npz" if "--format" not in args else "")
    args = [a for a in args if a != "--out-npz"]
    r = _cli(*args, "--model-uri", str(gen_file), "--out", out or str(tmp_path / "y.npz"), cwd=repo)
    assert r.returncode != 0 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_existing_output_is_never_overwritten(gen_file: Path, tmp_path: Path, project_home: Path, repo, _cli):
    out = tmp_path / "keep.npz"
    out.write_bytes(b"precious")
    r = _cli("--n", "2", "--model-uri", str(gen_file), "--out", str(out), cwd=repo)
    assert r.returncode != 0 and "already exists" in r.stderr and out.read_bytes() == b"precious"


def test_missing_or_corrupt_model_file(tmp_path: Path, project_home: Path, repo, _cli):
    bad = tmp_path / "generator.pt"
    bad.write_bytes(b"not a zip")
    r = _cli("--n", "2", "--model-uri", str(bad), "--out", str(tmp_path / "o.npz"), cwd=repo)
    assert r.returncode != 0 and "not a readable generator file" in r.stderr
    r = _cli("--n", "2", "--model-uri", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "o.npz"), cwd=repo)
    assert r.returncode != 0 and "not found" in r.stderr
