"""Preprocess: the validated canonical dataset -> the compact training-ready artifact.

1. Read the validated dataset (manifest + shards) and hash its data.
2. Keep each record's split; records without one get a deterministic split from a hash of their
   volume id (or id), so slices of one volume never straddle splits.
3. Pass every image through the ONE transform chain (``medsynth.transforms.ImageTransform``):
   CT in HU windowed, to [0, 1], squared, resized to 28/32/64, to [-1, 1]. uint8 stacks take the
   batched path (thousands of images per second).
4. Write ``data.npz`` + ``meta.json`` in the ``medsynth.prepared`` format atomically; the npz is
   written with fixed zip timestamps, so the same inputs and config give the same bytes.
"""

from __future__ import annotations

import enum
import hashlib
import io
import json
import os
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medsynth.config import params_defaults, to_dict
from medsynth.dataset import CanonicalDataset, dataset_hash
from medsynth.errors import ConfigError, InputError
from medsynth.fileio import atomic_dir, write_json
from medsynth.imaging import RESOLUTIONS, grey_to_unit, to_uint8
from medsynth.prepared import SPLITS
from medsynth.progress import progress
from medsynth.project import ProjectConfig
from medsynth.transforms import ImageTransform

CHUNK = 2048  # images per batched transform call (bounds peak memory)


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

    def check(self) -> None:
        if self.resolution not in RESOLUTIONS:
            raise ConfigError(f"preprocess.resolution: {self.resolution} not supported; valid: {', '.join(map(str, RESOLUTIONS))}")
        if self.ct_window[1] <= 0:
            raise ConfigError(f"preprocess.ct_window: width must be > 0, got {self.ct_window[1]}")
        if any(f < 0 for f in self.split_fractions) or abs(sum(self.split_fractions) - 1.0) > 1e-6:
            raise ConfigError(f"preprocess.split_fractions: need three shares >= 0 summing to 1, got {list(self.split_fractions)}")

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


def assign_splits(df: Any, seed: int, fractions: tuple[float, ...]) -> list[str]:
    """Every record's split: its own, else its volume's (when the volume has exactly one), else by hash."""
    key = [v if v else i for v, i in zip(df["volume_id"].astype(str), df["id"].astype(str), strict=True)]
    known: dict[str, set[str]] = {}
    for k, s in zip(key, df["split"].astype(str), strict=True):
        if s:
            known.setdefault(k, set()).add(s)
    out = []
    for k, s in zip(key, df["split"].astype(str), strict=True):
        if not s:
            ks = known.get(k, set())
            s = next(iter(ks)) if len(ks) == 1 else hash_split(k, seed, fractions)
        out.append(s)
    return out


def transform_all(ds: CanonicalDataset, tf: ImageTransform) -> np.ndarray:
    """All manifest rows through the chain -> uint8 [N, 1, R, R] in manifest order."""
    df = ds.manifest
    r = tf.resolution
    out = np.empty((len(df), 1, r, r), dtype=np.uint8)
    pos = np.arange(len(df))
    shard_col = df["shard"].astype(str).to_numpy()
    index_col = df["index"].to_numpy()
    units_col = df["units"].astype(str).to_numpy()
    jobs = []  # (shard, row positions, batched?) in chunks, for one progress bar over everything
    for s in sorted(set(shard_col)):
        rows = pos[shard_col == s]
        batched = rows[units_col[rows] != "HU"] if ds.shard(s).dtype == np.uint8 else rows[:0]
        single = np.setdiff1d(rows, batched)
        jobs += [(s, batched[i : i + CHUNK], True) for i in range(0, len(batched), CHUNK)]
        jobs += [(s, single[i : i + CHUNK], False) for i in range(0, len(single), CHUNK)]
    bar = progress(jobs, desc="preprocess", unit="chunk")
    for s, rows, fast in bar:
        shard = ds.shard(s)
        if fast:  # uint8 stack: one batched resize
            out[rows] = to_uint8(tf.batch_uint8(np.asarray(shard[index_col[rows]])))
        else:  # HU windowing / percentiles per image
            for p in rows:
                out[p, 0] = to_uint8(tf(np.asarray(shard[index_col[p]]), units=units_col[p]))
    return out


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like ``np.savez`` but with fixed zip timestamps (reproducible bytes).

    Stored uncompressed: uint8 is already 4x smaller than float32, and deflate would cost more
    time on every write and every training start than it saves on disk.
    """
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            zf.writestr(info, buf.getvalue())


def pixel_stats(x: np.ndarray) -> dict[str, float]:
    """Mean/std/min/max of uint8 storage in [-1, 1] units (what the model sees)."""
    if x.size == 0:
        return {"mean": 0.0, "std": 0.0, "min": 0.0, "max": 0.0}
    hist = np.bincount(x.reshape(-1), minlength=256).astype(np.float64)
    v = grey_to_unit(np.arange(256, dtype=np.float64))
    mean = float((hist * v).sum() / hist.sum())
    std = float(np.sqrt(max((hist * (v - mean) ** 2).sum() / hist.sum(), 0.0)))
    nz = np.nonzero(hist)[0]
    return {"mean": round(mean, 6), "std": round(std, 6), "min": round(float(v[nz[0]]), 6), "max": round(float(v[nz[-1]]), 6)}


def preprocess_dataset(cfg: PreprocessConfig, validated_dir: str | os.PathLike, out_dir: str | os.PathLike,
                       seed: int = 0) -> PreprocessResult:
    """Turn the validated dataset at ``validated_dir`` into the prepared artifact at ``out_dir``.

    Raises:
        InputError: ``validated_dir`` is not a canonical dataset, or has no records.
    """
    t0 = time.perf_counter()
    validated_dir, out_dir = Path(validated_dir), Path(out_dir)
    ds = CanonicalDataset(validated_dir)
    df = ds.manifest.reset_index(drop=True)
    if len(df) == 0:
        raise InputError(f"{validated_dir / 'manifest.parquet'}: no records to preprocess")
    config = to_dict(cfg) | {"seed": seed}
    input_hash = dataset_hash(validated_dir)
    data_hash = hashlib.sha256(f"{input_hash}:{json.dumps(config, sort_keys=True)}".encode()).hexdigest()

    splits = np.array(assign_splits(df, seed, cfg.split_fractions))
    x = transform_all(ds, cfg.transform())
    labels = df["label"].to_numpy().astype(np.int64)
    ids = df["id"].astype(str).to_numpy()
    arrays: dict[str, np.ndarray] = {}
    counts: dict[str, dict[str, int]] = {}
    stats: dict[str, dict[str, float]] = {}
    for s in SPLITS:
        m = splits == s
        arrays[f"{s}_x"], arrays[f"{s}_y"], arrays[f"{s}_ids"] = x[m], labels[m], ids[m].astype(str)
        counts[s] = {c: int((labels[m] == k).sum()) for k, c in enumerate(ds.classes)}
        stats[s] = pixel_stats(x[m])
    meta = {
        "format": "medsynth.prepared/1",
        "resolution": cfg.resolution,
        "classes": ds.classes,
        "modalities": ds.modalities,
        "counts": counts,
        "n_images": int(len(df)),
        "stats": stats,
        "config": config,
        "data_hash": data_hash,
        "source": {"path": str(validated_dir), "data_hash": input_hash,
                   # False when preprocess was pointed at an ingest output that skipped validate
                   "validated": (validated_dir / "validate_report.json").is_file(),
                   "modalities_present": sorted(df["modality"].astype(str).unique().tolist()),
                   "units_present": sorted(df["units"].astype(str).unique().tolist())},
    }
    with atomic_dir(out_dir) as tmp:
        write_npz(tmp / "data.npz", arrays)
        write_json(tmp / "meta.json", meta)
    return PreprocessResult(out_dir, counts, int(len(df)), data_hash, time.perf_counter() - t0)


def metrics_of(res: PreprocessResult) -> dict[str, float]:
    """Flat numeric metrics (MLflow and the DVC metrics file)."""
    m: dict[str, float] = {"n_images": res.n_images, "images_per_s": res.n_images / max(res.seconds, 1e-9)}
    for split, per_class in res.counts.items():
        m[f"n_{split}"] = sum(per_class.values())
    return m


def run(cfg: PreprocessConfig, project: ProjectConfig, validated_dir: str | os.PathLike,
        out_dir: str | os.PathLike, track: bool = True) -> PreprocessResult:
    """The preprocess step: write the training-ready artifact and log it to MLflow."""
    res = preprocess_dataset(cfg, validated_dir, out_dir, seed=project.seed)
    if track:
        import mlflow

        from medsynth.tracking import step_run

        with step_run(project, "preprocess", to_dict(cfg) | {"seed": project.seed}, res.data_hash):
            mlflow.log_metrics(metrics_of(res))
            mlflow.log_artifact(str(Path(out_dir) / "meta.json"))
    return res
