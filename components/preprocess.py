"""Preprocess: the validated canonical dataset -> the compact training-ready artifact.

1. Read the validated dataset one shard at a time.
2. Keep each record's split; records without one get a deterministic split from a hash of their
   volume id (or id), so slices of one volume never straddle splits (decided over the whole
   dataset first, from the few columns it needs).
3. Each shard becomes a *piece*: every image through the ONE transform chain
   (``medsynth.transforms.ImageTransform``: CT in HU windowed, to [0, 1], squared, resized to
   28/32/64, to [-1, 1]; uint8 stacks batched) with its labels, ids and splits. A piece is named by
   a hash of everything it is made from (shard bytes, rows, settings, split decisions) and kept in
   ``.<out>.pieces/`` beside the output: a re-run redoes only the pieces whose inputs changed, and a
   killed run resumes at the first unfinished one. Pieces are independent, so they are made by a
   process pool (``--workers``) or, on Kubeflow, by a ``dsl.ParallelFor`` over shard groups.
4. Join: the pieces, in shard order, streamed into one ``.npy`` per split and array (the
   ``medsynth.prepared`` format) written atomically; memory holds one piece. The data hash is the
   hash of those arrays: the same data whatever the number of shards, workers or machines.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medsynth.config import params_defaults, to_dict
from medsynth.dataset import CanonicalDataset, dataset_hash
from medsynth.errors import ConfigError, InputError
from medsynth.fileio import atomic_dir, atomic_path, sha256_file, write_json
from medsynth.imaging import RESOLUTIONS, grey_to_unit, to_uint8
from medsynth.prepared import FORMAT as PREPARED_FORMAT
from medsynth.prepared import SPLITS
from medsynth.progress import counter, progress
from medsynth.project import ProjectConfig
from medsynth.transforms import ImageTransform

CHUNK = 2048  # images per batched transform call (bounds peak memory)
PIECE_FORMAT = "medsynth.piece/1"
FANOUT = ("workers", "shards_per_task")  # how the work is split: never part of what is made


class SquareMode(enum.StrEnum):
    PAD = "pad"
    CROP = "crop"


@dataclass(frozen=True)
@params_defaults("preprocess")
class PreprocessConfig:
    """``preprocess:`` in params.yaml."""

    resolution: int
    ct_window: tuple[float, float]  # centre, width in HU
    square_mode: SquareMode
    upscale: bool
    split_fractions: tuple[float, float, float]  # train, val, test
    workers: int  # processes making pieces (one shard each)
    shards_per_task: int  # on Kubeflow: shards per parallel task

    def check(self) -> None:
        if self.resolution not in RESOLUTIONS:
            raise ConfigError(f"preprocess.resolution: {self.resolution} not supported; valid: {', '.join(map(str, RESOLUTIONS))}")
        if self.ct_window[1] <= 0:
            raise ConfigError(f"preprocess.ct_window: width must be > 0, got {self.ct_window[1]}")
        if any(f < 0 for f in self.split_fractions) or abs(sum(self.split_fractions) - 1.0) > 1e-6:
            raise ConfigError(f"preprocess.split_fractions: need three shares >= 0 summing to 1, got {list(self.split_fractions)}")
        if not 1 <= self.workers <= 256:
            raise ConfigError(f"preprocess.workers: need 1 to 256 processes, got {self.workers}")
        if self.shards_per_task < 1:
            raise ConfigError(f"preprocess.shards_per_task: must be >= 1, got {self.shards_per_task}")

    def transform(self) -> ImageTransform:
        return ImageTransform(resolution=self.resolution, window=self.ct_window,
                              square_mode=self.square_mode.value, upscale=self.upscale)


@dataclass
class PreprocessResult:
    out_dir: Path
    counts: dict[str, dict[str, int]]
    n_images: int
    data_hash: str
    seconds: float


def hash_split(key: str, seed: int, fractions: tuple[float, ...]) -> str:
    """Deterministic split of one volume/record: a uniform number from sha256(seed:key)."""
    u = int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big") / 2.0**64
    edge = 0.0
    for split, f in zip(SPLITS, fractions, strict=True):
        edge += f
        if u < edge:
            return split
    return SPLITS[-1]


def _split_key(volume_id: Any, rid: Any) -> list[str]:
    return [v if v else i for v, i in zip(volume_id.astype(str), rid.astype(str), strict=True)]


def split_hints(frames: Any, seed: int, fractions: tuple[float, ...]) -> dict[str, str]:
    """The split of every volume (or record) key that has records without a split: the one split its
    other records carry when they agree, else a hash of the key. ``frames`` yields DataFrames with
    ``id``, ``volume_id`` and ``split`` (one per shard); it is read twice, so pass a callable."""
    need: set[str] = set()
    for df in frames():
        keys = _split_key(df["volume_id"], df["id"])
        need.update(k for k, s in zip(keys, df["split"].astype(str), strict=True) if not s)
    if not need:
        return {}
    known: dict[str, set[str]] = {}
    for df in frames():
        for k, s in zip(_split_key(df["volume_id"], df["id"]), df["split"].astype(str), strict=True):
            if s and k in need:
                known.setdefault(k, set()).add(s)
    return {k: next(iter(known[k])) if len(known.get(k, ())) == 1 else hash_split(k, seed, fractions)
            for k in sorted(need)}


def assign_splits(df: Any, seed: int, fractions: tuple[float, ...], hints: dict[str, str] | None = None) -> list[str]:
    """Every record's split: its own, else its volume's (when the volume has exactly one), else by hash."""
    if hints is None:
        hints = split_hints(lambda: [df], seed, fractions)
    keys = _split_key(df["volume_id"], df["id"])
    return [s if s else hints[k] for k, s in zip(keys, df["split"].astype(str), strict=True)]


def transform_rows(ds: CanonicalDataset, df: Any, tf: ImageTransform, bar: Any = None) -> np.ndarray:
    """The images of manifest rows ``df`` through the chain -> uint8 [N, 1, R, R] in ``df``'s order."""
    r = tf.resolution
    out = np.empty((len(df), 1, r, r), dtype=np.uint8)
    pos = np.arange(len(df))
    shard_col = df["shard"].astype(str).to_numpy()
    index_col = df["index"].to_numpy()
    units_col = df["units"].astype(str).to_numpy()
    for s in dict.fromkeys(shard_col):  # shards in order of first appearance
        rows = pos[shard_col == s]
        shard = ds.shard(s)
        batched = rows[units_col[rows] != "HU"] if shard.dtype == np.uint8 else rows[:0]
        for i in range(0, len(batched), CHUNK):  # uint8 stack: one batched resize per chunk
            b = batched[i : i + CHUNK]
            out[b] = to_uint8(tf.batch_uint8(np.asarray(shard[index_col[b]])))
        for p in np.setdiff1d(rows, batched):  # HU windowing / percentiles per image
            out[p, 0] = to_uint8(tf(np.asarray(shard[index_col[p]]), units=units_col[p]))
        if bar is not None:
            bar.update(len(rows))
    return out


def transform_all(ds: CanonicalDataset, tf: ImageTransform) -> np.ndarray:
    """All manifest rows through the chain -> uint8 [N, 1, R, R] in manifest order (small data)."""
    with counter(len(ds.manifest), desc="preprocess", unit="img") as bar:
        return transform_rows(ds, ds.manifest, tf, bar)


# ---- pieces: one per shard ------------------------------------------------------------------------


@dataclass(frozen=True)
class PieceJob:
    """What one piece is made from; ``key`` names it (a hash of all of it)."""

    shard: str
    key: str
    n: int


def plan_pieces(cfg: PreprocessConfig, validated_dir: Path, seed: int) -> tuple[list[PieceJob], dict[str, str]]:
    """One job per shard of the validated dataset, in shard order, and the split hints they share."""
    from medsynth.dataset import rows_sha256, rows_table

    ds = CanonicalDataset(validated_dir)
    entries = ds.shard_entries()
    cols = ["id", "volume_id", "split"]
    hints = split_hints(lambda: (ds.shard_rows(e["name"], cols) for e in entries), seed, cfg.split_fractions)
    settings = json.dumps({k: v for k, v in to_dict(cfg).items() if k not in FANOUT}  # same bytes however split
                          | {"seed": seed, "format": PIECE_FORMAT}, sort_keys=True)
    jobs = []
    for e in entries:
        rows = ds.shard_rows(e["name"])
        if not len(rows):
            continue
        keys = set(_split_key(rows["volume_id"], rows["id"]))
        mine = {k: v for k, v in hints.items() if k in keys}
        h = hashlib.sha256()
        for part in (e.get("sha256") or sha256_file(ds.shard_path(e["name"])), rows_sha256(rows_table(rows)),
                     settings, json.dumps(mine, sort_keys=True)):
            h.update(part.encode())
        jobs.append(PieceJob(e["name"], h.hexdigest()[:32], len(rows)))
    return jobs, hints


def make_piece(cfg: PreprocessConfig, validated_dir: Path, job: PieceJob, hints: dict[str, str], seed: int,
               pieces: Path) -> Path:
    """The piece of one shard (reused when a piece with its key exists): x, y, ids, split codes."""
    dest = pieces / f"{job.key}.npz"
    if dest.is_file():
        return dest
    ds = CanonicalDataset(validated_dir)
    rows = ds.shard_rows(job.shard)
    split = np.array([SPLITS.index(s) for s in assign_splits(rows, seed, cfg.split_fractions, hints)], np.uint8)
    x = transform_rows(ds, rows, cfg.transform())
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, x=x, y=rows["label"].to_numpy().astype(np.int64), ids=rows["id"].to_numpy().astype(str),
                     split=split)
    return dest


def _piece_worker(args: tuple) -> str:
    os.environ.setdefault("MEDSYNTH_QUIET", "1")
    import torch

    torch.set_num_threads(1)
    return str(make_piece(*args))


def make_pieces(cfg: PreprocessConfig, validated_dir: Path, jobs: list[PieceJob], hints: dict[str, str], seed: int,
                pieces: Path, workers: int = 1) -> list[Path]:
    """Every job's piece (those already in ``pieces`` are kept), ``workers`` processes at a time."""
    pieces.mkdir(parents=True, exist_ok=True)
    todo = [j for j in jobs if not (pieces / f"{j.key}.npz").is_file()]
    if len(todo) < len(jobs):
        print(f"preprocess: {len(jobs) - len(todo)} of {len(jobs)} shard(s) unchanged, reused from {pieces}", flush=True)
    args = [(cfg, validated_dir, j, hints, seed, pieces) for j in todo]
    with counter(sum(j.n for j in todo), desc="preprocess", unit="img") as bar:
        if workers > 1 and len(todo) > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
                for j, _ in zip(todo, pool.map(_piece_worker, args), strict=True):
                    bar.update(j.n)
        else:
            for j, a in zip(todo, args, strict=True):
                make_piece(*a)
                bar.update(j.n)
    return [pieces / f"{j.key}.npz" for j in jobs]


def join_pieces(paths: list[Path], dest: Path) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]], dict[str, Any]]:
    """Stream the pieces, in order, into ``{split}_{x,y,ids}.npy`` under ``dest``.

    Returns the labels of every split (small: for counts); per array file, its shape, dtype and
    sha256 (of the array's bytes, so the same data gives the same hash however it was pieced); and
    each split's pixel statistics (from a grey-level histogram kept as the pixels pass).
    """
    n = dict.fromkeys(SPLITS, 0)
    width = dict.fromkeys(SPLITS, 1)
    shape = None
    for p in paths:  # sizes first (the .npy headers need them): split codes, id widths, image shape
        with np.load(p, allow_pickle=False) as z:
            codes, ids = z["split"], z["ids"]
            for k, s in enumerate(SPLITS):
                m = codes == k
                n[s] += int(m.sum())
                if m.any():
                    width[s] = max(width[s], int(np.char.str_len(ids[m]).max()))
            shape = shape or z["x"].shape[1:]
    if shape is None:
        raise InputError("no records to preprocess")
    specs = {}
    for s in SPLITS:
        specs[f"{s}_x"] = (np.dtype(np.uint8), (n[s], *shape))
        specs[f"{s}_y"] = (np.dtype(np.int64), (n[s],))
        specs[f"{s}_ids"] = (np.dtype(f"<U{width[s]}"), (n[s],))
    files, hashes = {}, {}
    labels: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    hist = {s: np.zeros(256, dtype=np.int64) for s in SPLITS}
    try:
        for name, (dtype, shp) in specs.items():
            f = files[name] = open(dest / f"{name}.npy", "wb")
            np.lib.format.write_array_header_1_0(
                f, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shp})
            hashes[name] = hashlib.sha256()
        for p in progress(paths, desc="preprocess: join", unit="piece"):
            with np.load(p, allow_pickle=False) as z:
                codes, arrays = z["split"], {"x": z["x"], "y": z["y"], "ids": z["ids"]}
            for k, s in enumerate(SPLITS):
                m = codes == k
                for a, arr in arrays.items():
                    part = np.ascontiguousarray(arr[m].astype(specs[f"{s}_{a}"][0], copy=False)).tobytes()
                    files[f"{s}_{a}"].write(part)
                    hashes[f"{s}_{a}"].update(part)
                labels[s].append(arrays["y"][m])
                hist[s] += grey_histogram(arrays["x"][m])
    finally:
        for f in files.values():
            f.close()
    info = {name: {"shape": list(shp), "dtype": dtype.str, "sha256": hashes[name].hexdigest()}
            for name, (dtype, shp) in specs.items()}
    stats = {s: _stats_from_hist(h) for s, h in hist.items()}
    return {s: np.concatenate(v) if v else np.zeros(0, np.int64) for s, v in labels.items()}, info, stats


def content_hash(resolution: int, classes: list[str], arrays: dict[str, dict[str, Any]]) -> str:
    """The prepared data's version: its arrays' bytes, shapes and dtypes, resolution and classes."""
    doc = {"resolution": resolution, "classes": classes,
           "arrays": {k: [v["shape"], v["dtype"], v["sha256"]] for k, v in sorted(arrays.items())}}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def grey_histogram(x: np.ndarray, chunk: int = 1 << 22) -> np.ndarray:
    """Counts of the 256 grey levels of uint8 ``x``, in chunks (bincount widens to int64)."""
    flat = x.reshape(-1)
    out = np.zeros(256, dtype=np.int64)
    for i in range(0, flat.size, chunk):
        out += np.bincount(flat[i : i + chunk], minlength=256)
    return out


def pixel_stats(x: np.ndarray) -> dict[str, float]:
    """Mean/std/min/max of uint8 storage in [-1, 1] units (what the model sees)."""
    return _stats_from_hist(grey_histogram(x))


def _stats_from_hist(counts: np.ndarray) -> dict[str, float]:
    if counts.sum() == 0:
        return {"mean": 0.0, "std": 0.0, "min": 0.0, "max": 0.0}
    hist = counts.astype(np.float64)
    v = grey_to_unit(np.arange(256, dtype=np.float64))
    mean = float((hist * v).sum() / hist.sum())
    std = float(np.sqrt(max((hist * (v - mean) ** 2).sum() / hist.sum(), 0.0)))
    nz = np.nonzero(hist)[0]
    return {"mean": round(mean, 6), "std": round(std, 6), "min": round(float(v[nz[0]]), 6), "max": round(float(v[nz[-1]]), 6)}


def preprocess_dataset(cfg: PreprocessConfig, validated_dir: str | os.PathLike, out_dir: str | os.PathLike,
                       seed: int = 0, workers: int | None = None) -> PreprocessResult:
    """Turn the validated dataset at ``validated_dir`` into the prepared artifact at ``out_dir``
    (pieces made by ``workers`` processes, ``preprocess.workers`` when None).

    Raises:
        InputError: ``validated_dir`` is not a canonical dataset, or has no records.
    """
    t0 = time.perf_counter()
    validated_dir, out_dir = Path(validated_dir), Path(out_dir)
    if len(CanonicalDataset(validated_dir)) == 0:
        raise InputError(f"{validated_dir / 'manifest.parquet'}: no records to preprocess")
    workers = cfg.workers if workers is None else workers
    if not 1 <= workers <= 256:
        raise ConfigError(f"--workers: need 1 to 256 processes, got {workers}")
    jobs, hints = plan_pieces(cfg, validated_dir, seed)
    pieces = pieces_dir(out_dir)
    paths = make_pieces(cfg, validated_dir, jobs, hints, seed, pieces, workers)
    res = join(cfg, validated_dir, paths, out_dir, seed)
    for old in set(pieces.glob("*.npz")) - set(paths):  # pieces of earlier inputs: no longer needed
        old.unlink()
    res.seconds = time.perf_counter() - t0
    return res


# ---- the same, fanned out: plan -> one task per group of shards -> join (Kubeflow's ParallelFor) ----


def write_plan(cfg: PreprocessConfig, validated_dir: str | os.PathLike, seed: int, path: str | os.PathLike) -> list[str]:
    """Plan the pieces into ``path`` (JSON); returns the groups of job numbers, one JSON list per
    task, ``preprocess.shards_per_task`` shards each."""
    validated_dir = Path(validated_dir)
    if len(CanonicalDataset(validated_dir)) == 0:
        raise InputError(f"{validated_dir / 'manifest.parquet'}: no records to preprocess")
    jobs, hints = plan_pieces(cfg, validated_dir, seed)
    k = cfg.shards_per_task
    groups = [list(range(i, min(i + k, len(jobs)))) for i in range(0, len(jobs), k)]
    write_json(path, {"jobs": [[j.shard, j.key, j.n] for j in jobs], "hints": hints, "seed": seed})
    return [json.dumps(g) for g in groups]


def _read_plan(path: str | os.PathLike) -> tuple[list[PieceJob], dict[str, str], int]:
    doc = json.loads(Path(path).read_text())
    return [PieceJob(*j) for j in doc["jobs"]], doc["hints"], int(doc["seed"])


def make_group(cfg: PreprocessConfig, validated_dir: str | os.PathLike, plan: str | os.PathLike, group: str,
               dest: str | os.PathLike) -> list[Path]:
    """The pieces of one group (a JSON list of job numbers from :func:`write_plan`) into ``dest``."""
    jobs, hints, seed = _read_plan(plan)
    picked = [jobs[i] for i in json.loads(group)]
    return make_pieces(cfg, Path(validated_dir), picked, hints, seed, Path(dest), workers=1)


def join_groups(cfg: PreprocessConfig, validated_dir: str | os.PathLike, plan: str | os.PathLike,
                piece_dirs: list[str], out_dir: str | os.PathLike) -> PreprocessResult:
    """Join the pieces the group tasks wrote (found by key in ``piece_dirs``) into ``out_dir``."""
    t0 = time.perf_counter()
    jobs, _, seed = _read_plan(plan)
    where = {p.name: p for d in piece_dirs for p in Path(d).glob("*.npz")}
    missing = [j.shard for j in jobs if f"{j.key}.npz" not in where]
    if missing:
        raise InputError(f"preprocess: no piece for shard(s) {', '.join(missing[:5])} among {len(piece_dirs)} task outputs")
    res = join(cfg, Path(validated_dir), [where[f"{j.key}.npz"] for j in jobs], Path(out_dir), seed)
    res.seconds = time.perf_counter() - t0
    return res


def pieces_dir(out_dir: Path) -> Path:
    """Where the pieces of ``out_dir`` are kept between runs (beside it, outside DVC's output)."""
    return out_dir.with_name(f".{out_dir.name}.pieces")


def join(cfg: PreprocessConfig, validated_dir: Path, paths: list[Path], out_dir: Path, seed: int) -> PreprocessResult:
    """Join the pieces into the prepared artifact at ``out_dir`` (atomically) with its meta.json."""
    ds = CanonicalDataset(validated_dir)
    input_hash = dataset_hash(validated_dir)
    with atomic_dir(out_dir) as tmp:
        labels, arrays, stats = join_pieces(paths, tmp)
        counts = {s: {c: int((labels[s] == k).sum()) for k, c in enumerate(ds.classes)} for s in SPLITS}
        data_hash = content_hash(cfg.resolution, ds.classes, arrays)
        n_images = sum(sum(c.values()) for c in counts.values())
        present = {"modality": set(), "units": set()}
        for _, r in ds.iter_rows(["modality", "units"]):
            for col in present:
                present[col].update(r[col].astype(str).unique())
        meta = {
            "format": PREPARED_FORMAT,
            "resolution": cfg.resolution,
            "classes": ds.classes,
            "modalities": ds.modalities,
            "counts": counts,
            "n_images": n_images,
            "stats": stats,
            "arrays": arrays,
            "config": to_dict(cfg) | {"seed": seed},
            "data_hash": data_hash,
            "n_pieces": len(paths),
            "source": {"path": str(validated_dir), "data_hash": input_hash,
                       # False when preprocess was pointed at an ingest output that skipped validate
                       "validated": (validated_dir / "validate_report.json").is_file(),
                       "modalities_present": sorted(present["modality"]),
                       "units_present": sorted(present["units"])},
        }
        write_json(tmp / "meta.json", meta)
    return PreprocessResult(out_dir, counts, n_images, data_hash, 0.0)


def metrics_of(res: PreprocessResult) -> dict[str, float]:
    """Flat numeric metrics (MLflow and the DVC metrics file)."""
    m: dict[str, float] = {"n_images": res.n_images, "images_per_s": res.n_images / max(res.seconds, 1e-9)}
    for split, per_class in res.counts.items():
        m[f"n_{split}"] = sum(per_class.values())
    return m


def run(cfg: PreprocessConfig, project: ProjectConfig, validated_dir: str | os.PathLike,
        out_dir: str | os.PathLike, track: bool = True, workers: int | None = None,
        joined: PreprocessResult | None = None) -> PreprocessResult:
    """The preprocess step: write the training-ready artifact and log it to MLflow (``joined``: the
    artifact was already made by :func:`join_groups`; only track it)."""
    res = joined or preprocess_dataset(cfg, validated_dir, out_dir, seed=project.seed, workers=workers)
    if track:
        import mlflow

        from medsynth.tracking import step_run

        with step_run(project, "preprocess", to_dict(cfg) | {"seed": project.seed}, res.data_hash):
            mlflow.log_metrics(metrics_of(res))
            mlflow.log_artifact(str(Path(out_dir) / "meta.json"))
    return res
