"""PNG/JPEG class folders: real PneumoniaMNIST X-rays written as image files by class and split."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medsynth.errors import InputError
from medsynth.readers import Modality, SourceConfig, detect_format, read_source
from medsynth.readers.image_folder import read_image_folder

DATA = Path(__file__).resolve().parents[2] / "data"


@functools.cache
def xrays() -> tuple[np.ndarray, np.ndarray]:
    """Real pediatric chest X-rays (28 px, uint8) and labels (0 normal, 1 pneumonia)."""
    with np.load(DATA / "pneumoniamnist.npz") as z:
        return z["val_images"][:12], z["val_labels"][:12, 0]


def make_tree(root: Path, with_split: bool = True) -> dict[str, np.ndarray]:
    """root/[train|test]/<normal|pneumonia>/img_i.png from real images; returns rel path -> pixels."""
    imgs, labels = xrays()
    written = {}
    for i, (img, lab) in enumerate(zip(imgs, labels, strict=True)):
        split = "train" if i < 8 else "test"
        rel = f"{split}/" if with_split else ""
        rel += f"{['normal', 'pneumonia'][lab]}/img_{i:02d}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / rel)
        written[rel] = img
    return written


def read(root: Path, classes: list[str] | None = None) -> tuple[list, list]:
    rejected: list = []
    src = SourceConfig(path=str(root), modality=Modality.XR, classes=classes if classes is not None else ["normal", "pneumonia"])
    recs = list(read_image_folder(src, root, lambda w, r: rejected.append((w, r)), root))
    return recs, rejected


def test_classes_and_splits_come_from_folders(tmp_path: Path):
    written = make_tree(tmp_path)
    assert detect_format(tmp_path).value == "image_folder"
    recs, rejected = read(tmp_path)
    assert not rejected and len(recs) == len(written)
    by_file = {r.source_file: r for r in recs}
    for rel, img in written.items():
        r = by_file[rel]
        split, cls = rel.split("/")[:2]
        assert (r.split, r.class_name) == (split, cls)
        np.testing.assert_array_equal(r.image, img)  # PNG is lossless: the very same pixels
        assert r.image.dtype == np.uint8 and r.modality == "XR"
    assert len({r.id for r in recs}) == len(recs)


def test_folder_names_map_onto_prefixed_declared_classes(tmp_path: Path):
    make_tree(tmp_path, with_split=False)
    recs, _ = read(tmp_path, ["XR/Normal", "XR/Pneumonia"])
    assert {r.class_name for r in recs} == {"XR/Normal", "XR/Pneumonia"}
    assert all(r.split == "" for r in recs)


def test_undeclared_class_folder_is_an_input_error(tmp_path: Path):
    make_tree(tmp_path)
    with pytest.raises(InputError, match="no folder on its path names a declared class"):
        read(tmp_path, ["normal", "covid"])


def test_without_declared_classes_the_folder_name_is_the_class(tmp_path: Path):
    make_tree(tmp_path)
    recs, _ = read(tmp_path, [])
    assert {r.class_name for r in recs} == {"normal", "pneumonia"}


def test_colour_jpeg_and_16_bit_png_become_grayscale(tmp_path: Path):
    img = xrays()[0][0]
    d = tmp_path / "normal"
    d.mkdir()
    Image.fromarray(np.stack([img] * 3, axis=-1)).save(d / "rgb.png")
    Image.fromarray(np.stack([img] * 3, axis=-1)).save(d / "rgb.jpg", quality=95)
    Image.fromarray(img.astype(np.uint16) * 257).save(d / "deep.png")
    recs, _ = read(tmp_path, ["normal"])
    got = {Path(r.source_file).name: r.image for r in recs}
    np.testing.assert_array_equal(got["rgb.png"], img)  # gray RGB -> the same gray
    assert got["rgb.jpg"].dtype == np.uint8 and np.abs(got["rgb.jpg"].astype(int) - img).mean() < 3
    assert got["deep.png"].dtype == np.uint16
    np.testing.assert_array_equal(got["deep.png"], img.astype(np.uint16) * 257)


def test_corrupt_and_foreign_files_are_quarantined_not_fatal(tmp_path: Path):
    written = make_tree(tmp_path)
    good = tmp_path / next(iter(written))
    (good.parent / "cut.png").write_bytes(good.read_bytes()[:60])  # truncated PNG
    (good.parent / "fake.jpg").write_text("this is not a jpeg")
    (good.parent / "labels.csv").write_text("a,b\n")
    recs, rejected = read(tmp_path)
    assert len(recs) == len(written)
    reasons = {Path(w).name: r for w, r in rejected}
    assert set(reasons) == {"cut.png", "fake.jpg", "labels.csv"}
    assert "cannot decode image" in reasons["cut.png"] and "not an image file" in reasons["labels.csv"]


def test_single_class_source_needs_no_class_folders(tmp_path: Path):
    img = xrays()[0][0]
    Image.fromarray(img).save(tmp_path / "a.png")
    src = SourceConfig(path="x", modality=Modality.XR, classes=["CXR"])
    recs = list(read_source(src, tmp_path, print, tmp_path))
    assert [r.class_name for r in recs] == ["CXR"]
