"""Data at scale on small real data: fixed-size shards, resumption after kill -9, corrupt shards,
pieces reused on re-runs, the process-pool and Kubeflow fan-outs giving the same bytes, and
training that reads its images from memory-mapped files."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from medsynth.components.ingest import ingest_sources
from medsynth.components.preprocess import PreprocessConfig, pieces_dir, preprocess_dataset
from medsynth.components.validate import ValidateConfig, validate_dataset
from medsynth.config import build
from medsynth.dataset import CanonicalDataset
from medsynth.errors import ConfigError, InputError
from medsynth.fileio import sha256_tree, staging_dir
from medsynth.prepared import ImageReader, PreparedData
from medsynth.readers import SourceConfig

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data"
CT = {"path": "mednist_ct_small.npz", "format": "npz", "modality": "CT", "classes": ["AbdomenCT", "ChestCT", "HeadCT"]}


def ct_source() -> SourceConfig:
    return build(SourceConfig, CT, "test")


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real CT set, 40 images per (split, class) = 360, in shards of 50."""
    out = tmp_path_factory.mktemp("sh") / "ingest"
    ingest_sources([ct_source()], DATA, out, limit_per_class=40, shard_size=50)
    return out


def test_shards_have_a_fixed_size_and_hold_the_source_images(sharded: Path) -> None:
    ds = CanonicalDataset(sharded)
    entries = ds.shard_entries()
    assert [e["n"] for e in entries] == [50] * 7 + [10] and ds.index["n_images"] == len(ds) == 360
    import pyarrow.parquet as pq

    assert pq.ParquetFile(sharded / "manifest.parquet").num_row_groups == 8  # one row group per shard
    with np.load(DATA / CT["path"]) as z:
        src = {"train": z["train_images"], "val": z["val_images"], "test": z["test_images"]}
    for name, rows in ds.iter_rows():
        assert len(rows) == ds.shard(name).shape[0] and list(rows["index"]) == list(range(len(rows)))
        for _, r in rows.iloc[[0, -1]].iterrows():  # first and last of every shard: the source's pixels
            split, idx = r["id"].split(":")[1], int(r["id"].split(":")[2])
            np.testing.assert_array_equal(ds.shard(name)[int(r["index"])], src[split][idx])
    # the same data in other shard sizes: other files, the same images in the same order
    one = ds.manifest
    assert one["id"].is_unique and list(one["shard"].unique()) == [e["name"] for e in entries]


def test_shard_size_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shard_size"):
        ingest_sources([ct_source()], DATA, tmp_path / "o", limit_per_class=2, shard_size=0)
    from medsynth.components.ingest import IngestConfig

    with pytest.raises(ConfigError, match="shard_size"):
        IngestConfig(shard_size=0).check()


def _big_source(tmp: Path, copies: int) -> Path:
    """``copies`` archives of the real pneumonia X-rays (each copy one grey level apart at one pixel)."""
    folder = tmp / "xr"
    folder.mkdir()
    with np.load(DATA / "pneumoniamnist.npz") as z:
        x, y = z["train_images"], z["train_labels"]
    for c in range(copies):
        xc = x.copy()
        xc[:, 0, c] = np.where(xc[:, 0, c] < 255, xc[:, 0, c] + 1, 254)
        np.savez(folder / f"c{c:02d}.npz", train_images=xc, train_labels=y)
    return folder


def _ingest_cmd(src: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "medsynth", "ingest", "--params", str(REPO / "params.yaml"), "--input", str(src),
            "--classes", "normal,pneumonia", "--modality", "XR", "--out", str(out), "--set", "ingest.shard_size=400"]


@pytest.mark.slow
def test_kill_9_during_ingest_then_the_same_command_resumes(tmp_path: Path) -> None:
    src = _big_source(tmp_path, 4)  # 18,832 real X-rays, 48 shards
    env = os.environ | {"MEDSYNTH_QUIET": "1", "MEDSYNTH_HOME": str(tmp_path)}
    clean = tmp_path / "clean"
    subprocess.run(_ingest_cmd(src, clean), env=env, check=True, capture_output=True)
    out = tmp_path / "out"
    done = staging_dir(out) / "shards" / "done.jsonl"
    _kill_when(_ingest_cmd(src, out), lambda: done.is_file() and len(done.read_text().splitlines()) >= 5, env)
    assert not out.exists() and done.is_file()
    kept = {json.loads(line)["name"]: (staging_dir(out) / "shards" / f"{json.loads(line)['name']}.npy").stat().st_mtime_ns
            for line in done.read_text().splitlines() if line.strip()}
    assert len(kept) >= 5
    r = subprocess.run(_ingest_cmd(src, out), env=env, check=True, capture_output=True, text=True)
    assert f"{len(kept)} kept from the interrupted run" in r.stdout
    assert sha256_tree(out) != "" and _tree_without_report(out) == _tree_without_report(clean)
    for name, mtime in kept.items():  # the finished shards were not written again
        assert (out / "shards" / f"{name}.npy").stat().st_mtime_ns == mtime
    assert not staging_dir(out).exists()


def _tree_without_report(root: Path) -> dict[str, str]:
    from medsynth.fileio import sha256_file

    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "ingest_report.json"}


def test_a_bad_source_leaves_no_staging_folder(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really")
    src = build(SourceConfig, {"path": str(bad), "format": "npz", "modality": "XR", "classes": ["a", "b"]}, "t")
    with pytest.raises(InputError, match="bad.npz"):
        ingest_sources([src], tmp_path, tmp_path / "out", shard_size=10)
    assert not staging_dir(tmp_path / "out").exists() and not (tmp_path / "out").exists()


def test_a_corrupt_shard_is_quarantined_and_the_rest_goes_on(sharded: Path, tmp_path: Path) -> None:
    import shutil

    bad = tmp_path / "ingest"
    shutil.copytree(sharded, bad)
    shard = bad / "shards" / "00003.npy"
    raw = bytearray(shard.read_bytes())
    raw[-100] ^= 0xFF  # one pixel flipped: the header still reads, the bytes are not what was written
    shard.write_bytes(bytes(raw))
    res, dest, summary = validate_dataset(ValidateConfig(max_failure_share=0.2), bad, tmp_path / "v")
    assert res.n_failed == 50 and res.reasons == {"missing_image": 50}
    assert summary["corrupt_shards"] == {"00003": "shard 00003 corrupt (sha256 differs from index.json)"}
    q = [json.loads(line) for line in (dest / "quarantine" / "records.jsonl").read_text().splitlines()]
    assert len(q) == 50 and all("corrupt" in r["details"]["missing_image"] and r["image"] is None for r in q)
    out = CanonicalDataset(dest)
    assert len(out) == 310 and "00003" not in {e["name"] for e in out.shard_entries()}
    # a missing shard: the same, with its own reason; with the default limit the run is refused
    shard.unlink()
    _, _, summary = validate_dataset(ValidateConfig(max_failure_share=0.2), bad, tmp_path / "v2")
    assert summary["corrupt_shards"] == {"00003": "shard 00003 missing"}


@pytest.fixture(scope="module")
def validated(sharded: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("val") / "validate"
    validate_dataset(ValidateConfig(), sharded, out)
    return out


def test_pieces_are_reused_and_any_split_of_the_work_gives_the_same_bytes(validated: Path, tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture) -> None:
    one = tmp_path / "one"
    r1 = preprocess_dataset(PreprocessConfig(resolution=32), validated, one)
    pieces = sorted(pieces_dir(one).glob("*.npz"))
    assert len(pieces) == 8 and r1.n_images == 360
    stamp = {p: p.stat().st_mtime_ns for p in pieces}
    capsys.readouterr()
    r2 = preprocess_dataset(PreprocessConfig(resolution=32), validated, one)  # nothing changed: nothing redone
    assert "8 of 8 shard(s) unchanged" in capsys.readouterr().out
    assert r2.data_hash == r1.data_hash and all(p.stat().st_mtime_ns == t for p, t in stamp.items())
    two = tmp_path / "two"
    r3 = preprocess_dataset(PreprocessConfig(resolution=32), validated, two, workers=2)
    assert r3.data_hash == r1.data_hash
    assert _arrays(one) == _arrays(two)
    with pytest.raises(ConfigError, match="workers"):
        preprocess_dataset(PreprocessConfig(resolution=32), validated, two, workers=0)
    # another setting is another piece: only then is the work redone
    r4 = preprocess_dataset(PreprocessConfig(resolution=28), validated, one)
    assert r4.data_hash != r1.data_hash and not set(pieces) & set(pieces_dir(one).glob("*.npz"))


def _arrays(root: Path) -> dict[str, str]:
    from medsynth.fileio import sha256_file

    return {p.name: sha256_file(p) for p in sorted(root.glob("*.npy"))}


def test_the_prepared_hash_is_the_content_whatever_the_shard_size(tmp_path: Path) -> None:
    hashes = set()
    for size in (37, 1000):
        ing, val = tmp_path / f"i{size}", tmp_path / f"v{size}"
        ingest_sources([ct_source()], DATA, ing, limit_per_class=20, shard_size=size)
        validate_dataset(ValidateConfig(), ing, val)
        hashes.add(preprocess_dataset(PreprocessConfig(resolution=28), val, tmp_path / f"p{size}").data_hash)
    assert len(hashes) == 1


def test_preparation_killed_then_resumed_redoes_only_the_unfinished_pieces(validated: Path, tmp_path: Path) -> None:
    out = tmp_path / "p"
    clean = preprocess_dataset(PreprocessConfig(resolution=32), validated, tmp_path / "clean")
    pieces = pieces_dir(out)
    code = ("import sys; from pathlib import Path; from medsynth.components import preprocess as P\n"
            "cfg = P.PreprocessConfig(resolution=32); jobs, hints = P.plan_pieces(cfg, Path(sys.argv[1]), 0)\n"
            "for j in jobs[:3]: P.make_piece(cfg, Path(sys.argv[1]), j, hints, 0, Path(sys.argv[2]))\n"
            "import os, signal; os.kill(os.getpid(), signal.SIGKILL)\n")
    pieces.mkdir(parents=True)
    r = subprocess.run([sys.executable, "-c", code, str(validated), str(pieces)], env=os.environ | {"MEDSYNTH_QUIET": "1"})
    assert r.returncode == -signal.SIGKILL and not out.exists()
    before = {p: p.stat().st_mtime_ns for p in pieces.glob("*.npz")}
    assert len(before) == 3
    res = preprocess_dataset(PreprocessConfig(resolution=32), validated, out)
    assert res.data_hash == clean.data_hash and _arrays(out) == _arrays(tmp_path / "clean")
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())  # the finished pieces were kept


def test_training_reads_its_images_on_demand(validated: Path, tmp_path: Path) -> None:
    import torch

    from medsynth.components.train import load_train_data
    from medsynth.training.train_config import load_train_config
    from medsynth.training.trainer import Trainer

    preprocess_dataset(PreprocessConfig(resolution=32), validated, tmp_path / "p")
    prep = PreparedData.load(tmp_path / "p")
    assert isinstance(prep.arrays["train_x"], np.memmap) and prep.meta["format"] == "medsynth.prepared/2"
    data = load_train_data(tmp_path / "p")
    mm = prep.arrays["train_x"]
    # the trainer's images are read on demand, never mapped or held: the same values as the file
    assert isinstance(data.x, ImageReader) and data.x.shape == mm.shape and len(data.x) == len(mm)
    idx = torch.tensor([5, 3, 4, 5, 119, 0])
    assert torch.equal(data.x[idx], torch.from_numpy(np.asarray(mm[idx.numpy()])))
    assert torch.equal(data.x[10:20], torch.from_numpy(np.asarray(mm[10:20]))) and data.x[7].shape == (1, 32, 32)
    with pytest.raises(IndexError):
        data.x[torch.tensor([len(mm)])]
    del mm, prep
    import gc

    gc.collect()
    assert not [m for m in Path("/proc/self/maps").read_text().splitlines() if m.endswith("train_x.npy")]
    cfg = load_train_config({"train": {"model": "dcgan", "ngf": 8, "ndf": 8, "batch_size": 16, "epochs": 100,
                                       "max_steps": 3, "checkpoint_every": 1000}})
    res = Trainer(cfg, data, tmp_path / "t", seed=0, resume=False).fit()
    assert res.global_step == 3
    # a truncated array is refused with the file's name
    with open(tmp_path / "p" / "train_y.npy", "r+b") as f:
        f.truncate(200)
    with pytest.raises(InputError, match="train_y"):
        PreparedData.load(tmp_path / "p")


@pytest.mark.slow
def test_kubeflow_fan_out_gives_the_single_process_bytes(validated: Path, tmp_path: Path, project_home: Path,
                                                         params: dict) -> None:
    """ingest -> validate -> plan -> dsl.ParallelFor(groups of shards) -> join, run by kfp.local."""
    from kfp import dsl, local

    from medsynth.pipelines import ops

    cfg = {"resolution": 32, "ct_window": [40.0, 400.0], "square_mode": "pad", "upscale": True,
           "split_fractions": [0.8, 0.1, 0.1], "workers": 1, "shards_per_task": 3}
    single = preprocess_dataset(build(PreprocessConfig, cfg, "preprocess"), validated, tmp_path / "single")

    @dsl.pipeline(name="fan-out")
    def fan_out(project: str, preprocess: str, validated: str):
        imp = dsl.importer(artifact_uri=validated, artifact_class=dsl.Dataset)
        plan = ops.preprocess_plan_op(project=project, preprocess=preprocess, kfp_run="t", dataset=imp.output)
        with dsl.ParallelFor(plan.outputs["Output"]) as group:
            part = ops.preprocess_shards_op(preprocess=preprocess, group=group, dataset=imp.output,
                                            plan=plan.outputs["plan"])
        ops.preprocess_op(project=project, preprocess=preprocess, kfp_run="t", dataset=imp.output,
                          plan=plan.outputs["plan"], pieces=dsl.Collected(part.outputs["pieces"]))

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"))
    project = json.dumps(params["project"])
    fan_out(project=project, preprocess=json.dumps(cfg), validated=str(validated))
    joined = next((tmp_path / "kfp").rglob("preprocess-op/prepared"))
    groups = list((tmp_path / "kfp").rglob("preprocess-shards-op*/pieces"))
    assert len(groups) == 3  # 8 shards, 3 per task
    assert json.loads((joined / "meta.json").read_text())["data_hash"] == single.data_hash
    assert _arrays(joined) == _arrays(tmp_path / "single")


def test_validation_rerun_reuses_each_unchanged_shard_and_resumes_after_kill_9(sharded: Path, tmp_path: Path,
                                                                              capsys: pytest.CaptureFixture,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from medsynth.components.validate import shard_cache

    clean = tmp_path / "clean"
    validate_dataset(ValidateConfig(), sharded, clean)
    capsys.readouterr()
    validate_dataset(ValidateConfig(), sharded, clean)  # nothing changed: no shard checked again
    assert "8 of 8 shard(s) unchanged" in capsys.readouterr().out
    out = tmp_path / "v"
    cache = shard_cache(out)
    code = ("import sys; from medsynth.components import validate as V\n"
            "V.BATCH_ROWS = 100  # two shards a batch: four batches to kill in between\n"
            "V.validate_dataset(V.ValidateConfig(), sys.argv[1], sys.argv[2])\n")
    _kill_when([sys.executable, "-c", code, str(sharded), str(out)], lambda: len(list(cache.glob("*.json"))) >= 2,
               os.environ | {"MEDSYNTH_QUIET": "1"})
    assert not out.exists()
    before = {p: p.stat().st_mtime_ns for p in cache.glob("*.json")}
    monkeypatch.setattr("medsynth.components.validate.BATCH_ROWS", 100)
    validate_dataset(ValidateConfig(), sharded, out)
    assert f"{2 * len(before)} of 8 shard(s) unchanged" in capsys.readouterr().out
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())
    same = ("manifest.parquet", "index.json", "classes.json", "quarantine/records.jsonl")
    assert all((out / f).read_bytes() == (clean / f).read_bytes() for f in same)


def _kill_when(cmd: list[str], ready, env: dict) -> None:
    """Start ``cmd`` and kill -9 it as soon as ``ready()``."""
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 120 and not ready():
            assert p.poll() is None, "the command finished before it could be interrupted"
            time.sleep(0.005)
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.wait()


def test_shards_are_checked_in_batches_of_about_batch_rows() -> None:
    from medsynth.components.validate import batches

    entries = [{"name": str(i), "rows": r} for i, r in enumerate([50, 50, 50, 200, 10, 10])]
    assert [[e["name"] for e in b] for b in batches(entries, 100)] == [["0", "1"], ["2"], ["3"], ["4", "5"]]
    assert len(batches(entries, 10_000)) == 1 and batches([], 100) == []


def test_repeats_are_exact_beyond_the_first_64_bits() -> None:
    from medsynth.components.validate import find_repeats

    # rows 0 and 2: the same pixels (train, test: a leak); rows 1 and 3 share the first 64 bits only
    sha = np.array([[1, 10], [5, 7], [1, 10], [5, 8], [9, 9]], dtype=np.uint64)
    split = np.array([2, 0, 0, 0, 3], dtype=np.int16)  # test, train, train, train, none
    names = ["a", "b", "c", "d", "b"]
    idh = np.array([1, 2, 3, 4, 2], dtype=np.uint64)  # rows 1 and 4 carry the same id
    rep = find_repeats(sha, split, idh, False, lambda rows: [names[int(k)] for k in rows])
    assert rep.kind.tolist() == [2, 0, 0, 0, 0] and rep.keep_of.tolist() == [2, -1, -1, -1, -1]  # train copy kept
    assert rep.id_repeats.tolist() == [1, 2, 1, 1, 2]
    allowed = find_repeats(sha, split, idh, True, lambda rows: [names[int(k)] for k in rows])
    assert allowed.kind.tolist() == [3, 0, 0, 0, 0]
    # equal 64-bit id hashes of different ids are not duplicates
    other = find_repeats(sha, split, idh, False, lambda rows: ["x", "y", "z", "w", "v"][: len(rows)])
    assert other.id_repeats.tolist() == [1, 1, 1, 1, 1]
