"""components/preprocess.py: config checks, deterministic splits, the one transform chain, the artifact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medsynth.components.ingest import ingest_sources
from medsynth.components.preprocess import (
    PreprocessConfig,
    assign_splits,
    hash_split,
    preprocess_dataset,
    run,
)
from medsynth.config import build, load_stage
from medsynth.dataset import CanonicalDataset
from medsynth.errors import ConfigError, InputError
from medsynth.fileio import sha256_tree
from medsynth.prepared import PreparedData, to_uint8
from medsynth.readers import SourceConfig

DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.fixture(scope="module")
def small_ct(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real bundled CT (uint8, 64 px), 8 images per (split, class)."""
    src = build(SourceConfig, {"path": "mednist_ct_small.npz", "format": "npz", "modality": "CT",
                               "classes": ["AbdomenCT", "ChestCT", "HeadCT"]}, "test")
    out = tmp_path_factory.mktemp("ct") / "ds"
    ingest_sources([src], DATA, out, limit_per_class=8)
    return out


@pytest.fixture(scope="module")
def dicom_ct(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two real CT DICOM slices in Hounsfield units (128 and 512 px), no split of their own."""
    srcs = [build(SourceConfig, {"path": f"dicom_samples/{f}", "format": "dicom", "modality": "CT",
                                 "classes": ["CT"]}, "test")
            for f in ("CT_small.dcm", "CT_head_CQ500_693_UNCI.dcm")]
    out = tmp_path_factory.mktemp("dcm") / "ds"
    ingest_sources(srcs, DATA, out)
    return out


@pytest.mark.parametrize("res", [28, 32, 64])
def test_resolutions_and_range(small_ct: Path, tmp_path: Path, res: int) -> None:
    r = preprocess_dataset(PreprocessConfig(resolution=res), small_ct, tmp_path / "p")
    p = PreparedData.load(tmp_path / "p")
    x, y = p.split("train")
    assert x.shape == (24, 1, res, res) and x.dtype == np.float32 and y.dtype == np.int64
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert p.resolution == res and p.data_hash == r.data_hash
    assert r.counts == {s: {"AbdomenCT": 8, "ChestCT": 8, "HeadCT": 8} for s in ("train", "val", "test")}


def test_uint8_at_native_size_is_lossless(small_ct: Path, tmp_path: Path) -> None:
    # 64 px uint8 through the chain and the uint8 storage gives back the stored pixels exactly
    preprocess_dataset(PreprocessConfig(resolution=64), small_ct, tmp_path / "p")
    p = PreparedData.load(tmp_path / "p")
    ds = CanonicalDataset(small_ct)
    xs, _ = p.split_uint8("test")
    first = int(np.flatnonzero(ds.manifest["id"] == p.arrays["test_ids"][0])[0])
    np.testing.assert_array_equal(xs[0, 0], ds.image(first))


@pytest.mark.parametrize("bad", ["preprocess.resolution=48", "preprocess.split_fractions=[0.5, 0.2, 0.2]",
                                 "preprocess.ct_window=[40, 0]", "preprocess.square_mode=stretch",
                                 "preprocess.ct_window=[40]"])
def test_bad_config_is_rejected(params: dict, bad: str) -> None:
    key, value = bad.split("=", 1)
    with pytest.raises(ConfigError, match=key.split(".")[1]):
        load_stage(PreprocessConfig, "preprocess", params, {key: value})


def test_hash_split_is_deterministic_and_follows_fractions() -> None:
    keys = [f"vol{i}" for i in range(5000)]
    a = [hash_split(k, 0, (0.8, 0.1, 0.1)) for k in keys]
    assert a == [hash_split(k, 0, (0.8, 0.1, 0.1)) for k in keys]
    share = {s: a.count(s) / len(a) for s in ("train", "val", "test")}
    assert abs(share["train"] - 0.8) < 0.03 and abs(share["val"] - 0.1) < 0.02
    assert a != [hash_split(k, 1, (0.8, 0.1, 0.1)) for k in keys]  # the seed reshuffles


def test_volume_slices_never_straddle_splits() -> None:
    df = pd.DataFrame({
        "id": [f"v{v}:{s}" for v in range(200) for s in range(5)] + ["a", "b"],
        "volume_id": [f"v{v}" for v in range(200) for _ in range(5)] + ["", "vx"],
        "split": [""] * 1000 + ["", ""],
    })
    df.loc[3, "split"] = "test"  # one slice of volume v0 has a split: the volume follows it
    splits = pd.Series(assign_splits(df, 0, (0.8, 0.1, 0.1)))
    per_volume = splits[:1000].groupby(df["volume_id"][:1000]).nunique()
    assert (per_volume == 1).all() and set(splits[:5]) == {"test"}
    assert len(set(splits[:1000])) == 3


def test_ct_in_hu_is_windowed_by_the_shared_chain(dicom_ct: Path, tmp_path: Path) -> None:
    cfg = PreprocessConfig(resolution=32, ct_window=(40.0, 400.0))
    preprocess_dataset(cfg, dicom_ct, tmp_path / "p")
    p = PreparedData.load(tmp_path / "p")
    ds = CanonicalDataset(dicom_ct)
    assert set(ds.manifest["units"]) == {"HU"} and p.meta["source"]["units_present"] == ["HU"]
    assert sum(p.count(s) for s in ("train", "val", "test")) == 2
    for s in ("train", "val", "test"):
        for i, rid in enumerate(p.arrays[f"{s}_ids"]):
            row = int(np.flatnonzero(ds.manifest["id"] == rid)[0])
            hu = ds.image(row)
            expected = to_uint8(cfg.transform()(hu, units="HU"))
            np.testing.assert_array_equal(p.arrays[f"{s}_x"][i, 0], expected)
            # the window [-160, 240] HU: air saturates to -1 and bone to +1
            assert p.arrays[f"{s}_x"][i].min() == 0 and p.arrays[f"{s}_x"][i].max() >= 250


def test_same_inputs_same_bytes_and_atomic_on_failure(small_ct: Path, tmp_path: Path) -> None:
    out = tmp_path / "p"
    r1 = preprocess_dataset(PreprocessConfig(), small_ct, out)
    h1 = sha256_tree(out)
    r2 = preprocess_dataset(PreprocessConfig(), small_ct, out)
    assert r1.data_hash == r2.data_hash and sha256_tree(out) == h1
    assert preprocess_dataset(PreprocessConfig(resolution=32), small_ct, tmp_path / "q").data_hash != r1.data_hash
    with pytest.raises(InputError, match="not a canonical dataset"):
        preprocess_dataset(PreprocessConfig(), tmp_path / "missing", out)
    assert sha256_tree(out) == h1  # the good artifact is untouched


def test_run_is_tracked(small_ct: Path, tmp_path: Path, project, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    monkeypatch.chdir(tmp_path)  # MLflow's default experiment puts artifacts under ./mlruns
    res = run(PreprocessConfig(), project, small_ct, tmp_path / "p")
    (r,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert r.data.tags["medsynth.step"] == "preprocess" and r.data.tags["medsynth.data_hash"] == res.data_hash
    assert r.data.metrics["n_train"] == 24 and r.data.params["resolution"] == "64"
    meta = json.loads((tmp_path / "p" / "meta.json").read_text())
    assert meta["counts"]["val"]["ChestCT"] == 8 and meta["config"]["seed"] == project.seed
