"""components/validate.py: the GE suite, quarantine with reasons, the failure threshold, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medsynth.components.ingest import ingest_sources
from medsynth.components.validate import ValidateConfig, rejected_dir, run, validate_dataset
from medsynth.config import build, load_stage
from medsynth.dataset import CanonicalDataset, DatasetWriter, ImageRecord
from medsynth.errors import ConfigError, ValidationFailed
from medsynth.project import ProjectConfig
from medsynth.readers import SourceConfig

DATA = Path(__file__).resolve().parents[2] / "data"
CT_CLASSES = ["AbdomenCT", "ChestCT", "HeadCT"]


@pytest.fixture(scope="module")
def small_ct(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real bundled CT set, 10 images per (split, class): 90 records."""
    src = build(SourceConfig, {"path": "mednist_ct_small.npz", "format": "npz", "modality": "CT",
                               "classes": CT_CLASSES}, "test")
    out = tmp_path_factory.mktemp("ct") / "ingest"
    ingest_sources([src], DATA, out, limit_per_class=10)
    return out


@pytest.fixture(scope="module")
def bad_ct(small_ct: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small real set plus bad records made from its real images: NaN, inf, constant,
    out-of-set label, a train image copied into test, and a copy inside train."""
    ds = CanonicalDataset(small_ct)
    m = ds.manifest
    w = DatasetWriter(ds.classes, ds.modalities)
    for i, r in m.iterrows():
        w.add(ImageRecord(image=ds.image(i), id=r["id"], source_file=r["source_file"], source_format="npz",
                          modality="CT", class_name=r["class_name"], split=r["split"]))
    img = ds.image(0).astype(np.float32)
    nan = img.copy()
    nan[10, 10] = np.nan
    inf = img.copy()
    inf[5, 5] = np.inf
    const = np.full_like(ds.image(1), int(ds.image(1).mean()))
    train0 = m.index[m["split"] == "train"][0]
    train1 = m.index[m["split"] == "train"][1]
    base = {"source_file": "bad.npz", "source_format": "npz", "modality": "CT"}
    w.add(ImageRecord(image=nan, id="bad:nan", class_name="AbdomenCT", split="train", **base))
    w.add(ImageRecord(image=inf, id="bad:inf", class_name="AbdomenCT", split="train", **base))
    w.add(ImageRecord(image=const, id="bad:constant", class_name="ChestCT", split="train", **base))
    w.add(ImageRecord(image=np.fliplr(ds.image(2)).copy(), id="bad:label", class_name="HeadCT", split="val", **base))
    w.add(ImageRecord(image=ds.image(train0), id="bad:leak", class_name=m.loc[train0, "class_name"], split="test", **base))
    w.add(ImageRecord(image=ds.image(train1), id="bad:dup", class_name=m.loc[train1, "class_name"], split="train", **base))
    out = tmp_path_factory.mktemp("bad") / "ingest"
    w.write(out)
    # a label outside the known class set cannot be written through the writer: edit the manifest
    df = pd.read_parquet(out / "manifest.parquet")
    df.loc[df["id"] == "bad:label", ["label", "class_name"]] = [7, "Unknown"]
    df.to_parquet(out / "manifest.parquet", index=False)
    return out


def test_real_small_set_passes_whole(small_ct: Path, tmp_path: Path) -> None:
    res, dest, summary = validate_dataset(ValidateConfig(), small_ct, tmp_path / "v")
    assert (res.n_checked, res.n_failed, res.failure_share) == (90, 0, 0.0)
    assert dest == tmp_path / "v" and all(res.expectations.values())
    # the validated output is a canonical dataset of its own, with the same data
    out = CanonicalDataset(dest)
    assert len(out) == 90 and out.classes == CT_CLASSES
    np.testing.assert_array_equal(out.image(5), CanonicalDataset(small_ct).image(5))
    assert summary["class_balance"]["counts"]["train"] == {c: 10 for c in CT_CLASSES}
    ge = json.loads((dest / "ge_result.json").read_text())
    assert ge["success"] is True and len(ge["results"]) == len(res.expectations)
    assert "PASSED" in (dest / "report.md").read_text()


def test_bad_records_are_quarantined_with_their_reason(bad_ct: Path, tmp_path: Path) -> None:
    cfg = ValidateConfig(max_failure_share=0.2)
    res, dest, _ = validate_dataset(cfg, bad_ct, tmp_path / "v")
    q = {r["id"]: r for r in map(json.loads, (dest / "quarantine" / "records.jsonl").read_text().splitlines())}
    assert set(q) == {"bad:nan", "bad:inf", "bad:constant", "bad:label", "bad:leak", "bad:dup"}
    assert q["bad:nan"]["reasons"] == ["nan_or_inf"]
    assert q["bad:inf"]["reasons"] == ["nan_or_inf"]
    assert q["bad:constant"]["reasons"] == ["constant"]
    assert q["bad:label"]["reasons"] == ["unknown_label"]
    assert q["bad:leak"]["reasons"] == ["train_test_leak"]
    assert q["bad:dup"]["reasons"] == ["duplicate"]
    assert all(r["source_file"] == "bad.npz" and r["details"] for r in q.values())
    # nothing is lost: the quarantined pixels are kept as .npy, identical to the stored ones
    src = CanonicalDataset(bad_ct)
    row = int(np.flatnonzero(src.manifest["id"] == "bad:nan")[0])
    kept = np.load(dest / "quarantine" / q["bad:nan"]["image"])
    np.testing.assert_array_equal(kept, src.image(row))  # NaN == NaN under assert_array_equal
    # the passing rows keep the train copy of the leaked/duplicated images
    ids = set(CanonicalDataset(dest).manifest["id"])
    assert not ids & set(q) and len(ids) == 90
    assert res.reasons == {"nan_or_inf": 2, "constant": 1, "unknown_label": 1, "train_test_leak": 1, "duplicate": 1}
    assert not res.expectations["column_values_to_be_in_set[_leak_with]"]


def test_overlap_allowed_keeps_cross_split_copy(bad_ct: Path, tmp_path: Path) -> None:
    cfg = ValidateConfig(max_failure_share=0.2, allow_train_test_overlap=True)
    res, dest, summary = validate_dataset(cfg, bad_ct, tmp_path / "v")
    assert "train_test_leak" not in res.reasons and summary["cross_split_copies_allowed"] == 1
    assert "bad:leak" in set(CanonicalDataset(dest).manifest["id"])


def test_too_many_failures_reject_run_and_keep_good_output(small_ct: Path, bad_ct: Path, tmp_path: Path) -> None:
    out = tmp_path / "v"
    validate_dataset(ValidateConfig(), small_ct, out)  # a good earlier output
    before = (out / "manifest.parquet").read_bytes()
    with pytest.raises(ValidationFailed) as exc:
        run(ValidateConfig(), ProjectConfig(), bad_ct, out, track=False)  # 6/96 = 6.25% > 2%
    msg = str(exc.value)
    assert "of 96 records failed validation" in msg and "nan_or_inf 2" in msg and "\n" not in msg
    assert exc.value.exit_code == 3
    assert (out / "manifest.parquet").read_bytes() == before
    rej = rejected_dir(out)
    assert not (rej / "manifest.parquet").exists() and "REJECTED" in (rej / "report.md").read_text()
    assert len((rej / "quarantine" / "records.jsonl").read_text().splitlines()) == 6


def test_cli_exit_code_and_one_line(bad_ct: Path, tmp_path: Path, repo: Path, project_home: Path,
                                    capsys: pytest.CaptureFixture) -> None:
    from medsynth.cli import main

    rc = main(["validate", "--params", str(repo / "params.yaml"), "--in", str(bad_ct),
               "--out", str(tmp_path / "v"), "--no-track"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 3 and len(err) == 1 and "failed validation" in err[0]
    rc = main(["validate", "--params", str(repo / "params.yaml"), "--in", str(bad_ct), "--out", str(tmp_path / "v"),
               "--no-track", "--set", "validate.max_failure_share=0.1", "--metrics", str(tmp_path / "m.json")])
    assert rc == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["n_failed"] == 6 and metrics["quarantined.nan_or_inf"] == 2


def test_run_is_tracked_in_mlflow(small_ct: Path, tmp_path: Path, project, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    monkeypatch.chdir(tmp_path)  # MLflow's default experiment puts artifacts under ./mlruns
    res = run(ValidateConfig(), project, small_ct, tmp_path / "v", track=True)
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert len(runs) == 1
    r = runs[0]
    assert r.data.tags["medsynth.step"] == "validate" and r.data.tags["medsynth.data_hash"] != "unknown"
    assert r.data.metrics["n_checked"] == res.n_checked == 90 and r.data.metrics["failure_share"] == 0.0
    assert r.data.metrics["expectation.column_values_to_be_between_std_"] == 1.0
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(r.info.run_id)}
    assert {"ge_result.json", "report.md", "quarantine"} <= arts


def test_config_is_checked(params: dict) -> None:
    cfg = load_stage(ValidateConfig, "validate", params)
    assert cfg.dtype_ranges["uint8"] == (0.0, 255.0) and cfg.hu_range == (-8192.0, 32767.0)
    with pytest.raises(ConfigError, match="max_failure_share"):
        load_stage(ValidateConfig, "validate", params, {"validate.max_failure_share": "1.5"})
    with pytest.raises(ConfigError, match="hu_range"):
        load_stage(ValidateConfig, "validate", params, {"validate.hu_range": "[100, -100]"})
