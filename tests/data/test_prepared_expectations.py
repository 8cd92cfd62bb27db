"""Data expectations on the real bundled CT set after ingest -> validate -> preprocess.

Each test says the risk it guards. The chain runs once per module (no MLflow: tracking is
tested in tests/unit) on all 7,500 real images of data/mednist_ct_small.npz.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from medsynth.components.ingest import IngestConfig, ingest_sources
from medsynth.components.preprocess import PreprocessConfig, preprocess_dataset
from medsynth.components.validate import ValidateConfig, validate_dataset
from medsynth.config import load_stage, read_params
from medsynth.dataset import CanonicalDataset
from medsynth.fileio import sha256_tree
from medsynth.prepared import SPLITS, PreparedData

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict:
    params = read_params(REPO / "params.yaml")
    ing = load_stage(IngestConfig, "ingest", params, {"ingest.dataset": "ct", "ingest.limit_per_class": "null"})
    root = tmp_path_factory.mktemp("chain")
    ingest_sources(ing.sources, REPO / "data", root / "ingest")
    vres, _, summary = validate_dataset(load_stage(ValidateConfig, "validate", params), root / "ingest", root / "validate")
    pcfg = load_stage(PreprocessConfig, "preprocess", params, {"preprocess.resolution": "64"})
    pres = preprocess_dataset(pcfg, root / "validate", root / "preprocess")
    return {"root": root, "validate": vres, "summary": summary, "preprocess": pres, "pcfg": pcfg,
            "prepared": PreparedData.load(root / "preprocess"), "validated": CanonicalDataset(root / "validate")}


def test_real_set_passes_validation_whole(chain: dict) -> None:
    # Risk: the suite is so strict that it quarantines real images (or the bundled data got damaged),
    # silently shrinking or skewing the training set.
    v = chain["validate"]
    assert v.n_checked == 7500 and v.n_failed == 0 and all(v.expectations.values())


def test_shapes_and_dtypes(chain: dict) -> None:
    # Risk: a wrong resize/pad or channel layout that the GAN code would only notice as a crash or,
    # worse, as silently broadcast tensors.
    p = chain["prepared"]
    for s in SPLITS:
        x, y = p.split(s)
        assert x.shape[1:] == (1, 64, 64) and x.dtype == np.float32
        assert y.shape == (x.shape[0],) and y.dtype == np.int64
        assert p.arrays[f"{s}_ids"].shape == (x.shape[0],)
    assert p.meta["resolution"] == 64 and p.classes == ["AbdomenCT", "ChestCT", "HeadCT"]
    assert p.meta["source"]["validated"] is True


def test_values_in_unit_range_and_not_degenerate(chain: dict) -> None:
    # Risk: normalisation off by a factor (e.g. [0, 1] or [0, 255] reaching a tanh generator), or
    # images collapsed to a constant by a windowing/normalisation bug.
    x, _ = chain["prepared"].split("train")
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert x.min() == -1.0 and x.max() == 1.0  # the full range is used
    per_image_std = x.reshape(len(x), -1).std(axis=1)
    assert (per_image_std > 0.5 / 127.5).all()  # validate.min_std (0.5 of 255 levels), in [-1, 1] units
    st = chain["prepared"].meta["stats"]["train"]
    assert abs(st["mean"] - float(x.mean())) < 1e-3 and abs(st["std"] - float(x.std())) < 1e-3


def test_labels_and_class_balance(chain: dict) -> None:
    # Risk: labels shifted or dropped on the way (a conditional GAN would learn the wrong classes),
    # or one class dominating a split.
    p = chain["prepared"]
    expected = {"train": 2000, "val": 250, "test": 250}
    for s in SPLITS:
        _, y = p.split(s)
        counts = np.bincount(y, minlength=3)
        assert counts.tolist() == [expected[s]] * 3
        assert p.meta["counts"][s] == dict.fromkeys(p.classes, expected[s])
    assert chain["summary"]["class_balance"]["warnings"] == []


def test_labels_follow_the_source_records(chain: dict) -> None:
    # Risk: images and labels reordered independently (each image paired with another's label).
    p, ds = chain["prepared"], chain["validated"]
    by_id = ds.manifest.set_index("id")
    ids, y = p.arrays["test_ids"], p.arrays["test_y"]
    assert (by_id.loc[ids, "label"].to_numpy() == y).all()
    assert (by_id.loc[ids, "split"] == "test").all()  # the source split is kept


def test_no_train_test_leak(chain: dict) -> None:
    # Risk: the same image in train and in test (or val) inflates every evaluation and hides
    # memorisation by the generator.
    p, ds = chain["prepared"], chain["validated"]
    sha = ds.manifest.set_index("id")["sha256"]
    src = {s: set(sha.loc[p.arrays[f"{s}_ids"]]) for s in SPLITS}
    assert not src["train"] & src["test"] and not src["train"] & src["val"] and not src["val"] & src["test"]
    # and after the transform: no prepared test image equals a prepared train image
    def digests(s: str) -> set[str]:
        return {hashlib.sha256(im.tobytes()).hexdigest() for im in p.arrays[f"{s}_x"]}
    assert not digests("train") & digests("test")
    ids = [set(p.arrays[f"{s}_ids"]) for s in SPLITS]
    assert sum(map(len, ids)) == len(set().union(*ids)) == 7500


def test_deterministic_output(chain: dict, tmp_path: Path) -> None:
    # Risk: a rerun on the same data and config yields different training data (DVC would see a
    # change, and an experiment could not be reproduced from its data hash).
    again = preprocess_dataset(chain["pcfg"], chain["root"] / "validate", tmp_path / "again")
    assert again.data_hash == chain["preprocess"].data_hash
    assert sha256_tree(tmp_path / "again") == sha256_tree(chain["root"] / "preprocess")
