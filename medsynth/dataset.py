"""The canonical dataset that ingest writes and every later step reads.

Layout of a canonical dataset folder::

    manifest.parquet     one row per 2D image (columns: MANIFEST_COLUMNS), one row group per shard
    shards/NNNNN.npy     at most ``shard_size`` images of one (height, width, dtype), stacked
    index.json           the shards: name, image count, sha256 of the .npy, sha256 of its rows
    classes.json         {"classes": [...], "modalities": [...]} in label order

A row points at its image with (``shard``, ``index``). Shards have a fixed size, so every step
works one shard at a time and its memory is bounded by the shard, not by the dataset: the writer
holds at most one unfinished shard per image shape, readers map one shard at a time.

Images keep their source dtype and values (uint8 for MedMNIST/PNG, float32 Hounsfield units for
CT DICOM, ...). Preprocess turns them into the training-ready artifact (see ``prepared.py``).

Resumption: the writer writes into a staging folder; every finished shard (its .npy and its rows)
is recorded in ``shards/done.jsonl``. A writer started again on the same staging folder with the
same fingerprint keeps those shards: the caller offers its records again from the start, and the
records of kept shards are only counted (not hashed, not written).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medsynth.errors import InputError
from medsynth.fileio import atomic_path, read_parquet, sha256_file

MANIFEST_COLUMNS = [
    "id",  # stable id: <source key>:<split or part>:<index>[:<frame>]
    "source_file",  # path of the file it came from, relative to the input root
    "source_format",  # npz | image | dicom | nifti
    "modality",  # XR | CT | MR
    "label",  # int, index into classes.json
    "class_name",
    "split",  # train | val | test | "" (assigned deterministically by preprocess)
    "volume_id",  # grouping key for slices/frames of one volume or series ("" if 2D)
    "frame",  # slice/frame index inside the volume (0 for 2D)
    "units",  # raw | HU
    "burned_in_annotation",  # bool: DICOM says (or may say) text is burned into the pixels
    "sha256",  # of the pixel bytes as stored
    "height",
    "width",
    "dtype",
    "min",
    "max",
    "mean",
    "std",
    "nan_count",
    "shard",
    "index",
]

SPLITS = ("train", "val", "test")
FORMAT = "medsynth.canonical/2"
INDEX_FILE = "index.json"
DONE_FILE = "done.jsonl"  # in shards/: one line per finished shard while a dataset is being written
MAX_SHARD_BYTES = 256 << 20  # a shard also closes when its pixels reach this size (large DICOM slices)


@dataclass
class ImageRecord:
    """One 2D image as a reader yields it, before it is stored."""

    image: np.ndarray
    id: str
    source_file: str
    source_format: str
    modality: str
    class_name: str
    split: str = ""
    volume_id: str = ""
    frame: int = 0
    units: str = "raw"
    burned_in_annotation: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def image_stats(img: np.ndarray) -> dict[str, Any]:
    """Per-image statistics for the manifest (NaN-aware)."""
    a = np.asarray(img)
    f = a.astype(np.float64, copy=False)
    nan = int(np.count_nonzero(~np.isfinite(f))) if np.issubdtype(a.dtype, np.floating) else 0
    finite = f[np.isfinite(f)] if nan else f
    if finite.size == 0:
        mn = mx = mean = std = float("nan")
    else:
        mn, mx = float(finite.min()), float(finite.max())
        mean, std = float(finite.mean()), float(finite.std())
    return {
        "sha256": hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest(),
        "height": int(a.shape[0]) if a.ndim >= 1 else 0,
        "width": int(a.shape[1]) if a.ndim >= 2 else 0,
        "dtype": str(a.dtype),
        "min": mn,
        "max": mx,
        "mean": mean,
        "std": std,
        "nan_count": nan,
    }


def manifest_schema() -> Any:
    """The manifest's Arrow schema (every shard's rows and every manifest file use it)."""
    import pyarrow as pa

    types = {"label": pa.int64(), "frame": pa.int64(), "burned_in_annotation": pa.bool_(), "height": pa.int64(),
             "width": pa.int64(), "min": pa.float64(), "max": pa.float64(), "mean": pa.float64(),
             "std": pa.float64(), "nan_count": pa.int64(), "index": pa.int64()}
    return pa.schema([(c, types.get(c, pa.string())) for c in MANIFEST_COLUMNS])


def rows_table(rows: Any) -> Any:
    """Manifest rows (a list of dicts or a DataFrame) as an Arrow table with the manifest's schema."""
    import pandas as pd
    import pyarrow as pa

    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    return pa.Table.from_pandas(df[MANIFEST_COLUMNS], schema=manifest_schema(), preserve_index=False)


def rows_sha256(table: Any) -> str:
    """Content hash of manifest rows (independent of how the parquet file was written)."""
    h = hashlib.sha256()
    for col in MANIFEST_COLUMNS:
        h.update(col.encode())
        h.update(json.dumps(table.column(col).to_pylist(), default=str).encode())
    return h.hexdigest()


class DatasetWriter:
    """Streams records into a canonical dataset: a shard is written as soon as it is full.

    ``root`` is the staging folder (a fresh temporary one when None); :meth:`write` finishes the
    dataset there and moves it to its destination. ``fingerprint`` names what is being written (the
    sources and settings): a staging folder left by an interrupted writer with the same
    fingerprint is resumed, any other is cleared.
    """

    def __init__(self, classes: list[str], modalities: list[str], root: str | os.PathLike | None = None,
                 shard_size: int = 4096, fingerprint: str = "", max_shard_bytes: int = MAX_SHARD_BYTES):
        if len(classes) != len(modalities):
            raise ValueError("classes and modalities must have the same length")
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        self.classes = list(classes)
        self.modalities = list(modalities)
        self.shard_size = int(shard_size)
        self.max_shard_bytes = int(max_shard_bytes)
        self._label = {c: i for i, c in enumerate(self.classes)}
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="medsynth-dataset-"))
        self.fingerprint = hashlib.sha256(
            json.dumps([fingerprint, self.classes, self.modalities, self.shard_size]).encode()).hexdigest()
        self._kept: list[dict[str, Any]] = self._resume()  # finished by an interrupted run
        self._done: list[dict[str, Any]] = []
        self._groups: dict[str, int] = {}  # open group -> number of its first buffered record
        self._buf: dict[str, list[ImageRecord]] = {}
        self._bytes: dict[str, int] = {}
        self.n_records = 0
        self.resumed_shards = len(self._kept)

    @property
    def shards(self) -> list[dict[str, Any]]:
        """The finished shards so far (name, group, n, sha256, rows_sha256)."""
        return list(self._done)

    # ---- resumption -------------------------------------------------------------------------
    def _resume(self) -> list[dict[str, Any]]:
        stamp = self.root / "shards" / "fingerprint"
        if stamp.is_file() and stamp.read_text() == self.fingerprint:
            done = []
            lines = (self.root / "shards" / DONE_FILE).read_text().splitlines() if (self.root / "shards" / DONE_FILE).is_file() else []
            for line in lines:
                try:
                    d = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a kill: that shard is redone
                    break
                if not ((self.root / "shards" / f"{d['name']}.npy").is_file()
                        and (self.root / "shards" / f"{d['name']}.rows.parquet").is_file()):
                    break
                done.append(d)
            self._rewrite_done(done)
            return done
        if self.root.exists():
            shutil.rmtree(self.root)
        (self.root / "shards").mkdir(parents=True)
        stamp.write_text(self.fingerprint)
        return []

    def _rewrite_done(self, done: list[dict[str, Any]]) -> None:
        with atomic_path(self.root / "shards" / DONE_FILE) as tmp:
            tmp.write_text("".join(json.dumps(d) + "\n" for d in done))
        keep = {d["name"] for d in done}
        for f in (self.root / "shards").glob("*"):  # a shard written after the last recorded one
            if f.name.split(".")[0] not in keep and f.name not in {DONE_FILE, "fingerprint"}:
                f.unlink()

    # ---- writing ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.n_records

    def label_of(self, class_name: str) -> int:
        try:
            return self._label[class_name]
        except KeyError:
            raise InputError(
                f"class {class_name!r} is not declared; known: {', '.join(self.classes)}"
            ) from None

    def add(self, rec: ImageRecord) -> None:
        """Buffer one record; when its shape's buffer is full, every open buffer is written as a
        shard (in the order their records arrived), so shards follow the records' order."""
        img = np.asarray(rec.image)
        self.label_of(rec.class_name)  # an undeclared class fails here, not at the flush
        group = f"{'x'.join(map(str, img.shape))}:{img.dtype.str}"
        self._groups.setdefault(group, self.n_records)
        self._buf.setdefault(group, []).append(rec)
        self._bytes[group] = self._bytes.get(group, 0) + img.nbytes
        self.n_records += 1
        if len(self._buf[group]) >= self.shard_size or self._bytes[group] >= self.max_shard_bytes:
            self._flush_all()

    def _flush_all(self) -> None:
        for g in sorted(self._groups, key=self._groups.__getitem__):
            self._flush(g)
        self._groups.clear()

    def _row(self, rec: ImageRecord, img: np.ndarray, shard: str, index: int) -> dict[str, Any]:
        return {
            "id": rec.id,
            "source_file": rec.source_file,
            "source_format": rec.source_format,
            "modality": rec.modality,
            "label": self.label_of(rec.class_name),
            "class_name": rec.class_name,
            "split": rec.split,
            "volume_id": rec.volume_id,
            "frame": int(rec.frame),
            "units": rec.units,
            "burned_in_annotation": bool(rec.burned_in_annotation),
            **image_stats(img),
            "shard": shard,
            "index": index,
        }

    def _flush(self, group: str) -> None:
        recs = self._buf.pop(group, [])
        self._bytes.pop(group, None)
        if not recs:
            return
        k = len(self._done)
        if k < len(self._kept):  # written by the interrupted run: the same records, kept as they are
            d = self._kept[k]
            if d["n"] != len(recs) or d["group"] != group:
                raise InputError(f"{self.root}: cannot resume, shard {d['name']} differs from the records read "
                                 "again (the sources changed); remove the folder and run again")
            self._done.append(d)
            return
        name = f"{k:05d}"
        imgs = [np.asarray(r.image) for r in recs]
        rows = [self._row(r, img, name, i) for i, (r, img) in enumerate(zip(recs, imgs, strict=True))]
        shards = self.root / "shards"
        with atomic_path(shards / f"{name}.npy") as tmp:
            with open(tmp, "wb") as f:
                np.save(f, np.stack(imgs), allow_pickle=False)
        table = rows_table(rows)
        with atomic_path(shards / f"{name}.rows.parquet") as tmp:
            import pyarrow.parquet as pq

            pq.write_table(table, os.fspath(tmp))
        d = {"name": name, "group": group, "n": len(imgs), "sha256": sha256_file(shards / f"{name}.npy"),
             "rows_sha256": rows_sha256(table)}
        self._done.append(d)
        with open(shards / DONE_FILE, "a") as f:  # the shard is finished once this line is whole
            f.write(json.dumps(d) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def write(self, out_dir: str | os.PathLike | None = None) -> Path:
        """Flush the open shards, write manifest, index and classes; move the staging folder to
        ``out_dir`` when given (it should be new or replaceable). Returns the dataset's folder."""
        import pyarrow.parquet as pq

        self._flush_all()
        shards = self.root / "shards"
        writer = None
        try:
            for d in self._done:  # the manifest: one row group per shard, in shard order
                t = pq.read_table(os.fspath(shards / f"{d['name']}.rows.parquet"))
                if writer is None:
                    writer = pq.ParquetWriter(os.fspath(self.root / "manifest.parquet"), t.schema)
                writer.write_table(t)
            if writer is None:
                writer = pq.ParquetWriter(os.fspath(self.root / "manifest.parquet"), manifest_schema())
        finally:
            if writer is not None:
                writer.close()
        write_index(self.root, self.classes, self.modalities, [
            {k: d[k] for k in ("name", "n", "sha256", "rows_sha256")} for d in self._done], self.shard_size)
        for d in self._done:
            (shards / f"{d['name']}.rows.parquet").unlink()
        for f in (DONE_FILE, "fingerprint"):
            (shards / f).unlink(missing_ok=True)
        if out_dir is None or Path(out_dir).resolve() == self.root.resolve():
            return self.root
        out = Path(out_dir)
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(self.root, out)
        self.root = out
        return out


def write_index(root: Path, classes: list[str], modalities: list[str], shards: list[dict[str, Any]],
                shard_size: int) -> None:
    """``index.json`` and ``classes.json`` of a canonical dataset folder."""
    from medsynth.fileio import write_json

    write_json(root / INDEX_FILE, {"format": FORMAT, "shard_size": shard_size,
                                   "n_images": int(sum(s["n"] for s in shards)), "shards": shards})
    (root / "classes.json").write_text(json.dumps({"classes": classes, "modalities": modalities}, indent=2) + "\n")


class CanonicalDataset:
    """Read access to a canonical dataset folder, whole (``manifest``) or one shard at a time."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        mf = self.root / "manifest.parquet"
        if not mf.is_file():
            raise InputError(f"{self.root}: not a canonical dataset (manifest.parquet missing; run `medsynth ingest`)")
        meta = json.loads((self.root / "classes.json").read_text())
        self.classes: list[str] = meta["classes"]
        self.modalities: list[str] = meta["modalities"]
        ix = self.root / INDEX_FILE
        self.index: dict[str, Any] = json.loads(ix.read_text()) if ix.is_file() else {}
        self._manifest: Any = None
        self._shards: dict[str, np.ndarray] = {}

    @property
    def manifest(self) -> Any:
        """Every row as one DataFrame (loaded on first use: for small data; large data goes by shard)."""
        if self._manifest is None:
            self._manifest = read_parquet(self.root / "manifest.parquet")
        return self._manifest

    @manifest.setter
    def manifest(self, df: Any) -> None:
        self._manifest = df

    def __len__(self) -> int:
        if self._manifest is not None:
            return len(self._manifest)
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(os.fspath(self.root / "manifest.parquet")).metadata.num_rows)

    def shard_entries(self) -> list[dict[str, Any]]:
        """index.json's shard list (for a folder written without an index: one entry per shard file)."""
        if self.index:
            return list(self.index["shards"])
        return [{"name": f.stem, "n": None, "sha256": None} for f in sorted((self.root / "shards").glob("*.npy"))]

    def shard_rows(self, name: str, columns: list[str] | None = None) -> Any:
        """The manifest rows of one shard (row-group statistics let Arrow skip the others)."""
        import pyarrow.parquet as pq

        return pq.read_table(os.fspath(self.root / "manifest.parquet"), columns=columns,
                             filters=[("shard", "=", name)]).to_pandas()

    def iter_rows(self, columns: list[str] | None = None) -> Iterator[tuple[str, Any]]:
        """(shard name, its rows) for every shard, in index order, one shard in memory at a time."""
        for s in self.shard_entries():
            yield s["name"], self.shard_rows(s["name"], columns)

    def shard_path(self, name: str) -> Path:
        return self.root / "shards" / f"{name}.npy"

    def shard(self, name: str) -> np.ndarray:
        if name not in self._shards:
            self._shards[name] = np.load(self.shard_path(name), mmap_mode="r", allow_pickle=False)
        return self._shards[name]

    def release(self, name: str) -> None:
        """Unmap one shard (long passes over many shards keep only the current one mapped)."""
        self._shards.pop(name, None)

    def image(self, row: int) -> np.ndarray:
        """The stored 2D image of manifest row ``row`` (positional)."""
        r = self.manifest.iloc[row]
        return np.asarray(self.shard(str(r["shard"]))[int(r["index"])])


def split_class_counts(root: str | os.PathLike) -> dict[str, dict[str, int]]:
    """{split (or "unassigned"): {class: images}} of a canonical dataset, read one row group at a time."""
    import pyarrow.parquet as pq

    c: Counter = Counter()
    f = pq.ParquetFile(os.fspath(Path(root) / "manifest.parquet"))
    for i in range(f.num_row_groups):
        t = f.read_row_group(i, columns=["split", "class_name"])
        c.update(zip(t.column("split").to_pylist(), t.column("class_name").to_pylist(), strict=True))
    out: dict[str, dict[str, int]] = {}
    for (split, cls), n in sorted(c.items()):
        out.setdefault(split or "unassigned", {})[str(cls)] = int(n)
    return out


def dataset_hash(root: str | os.PathLike) -> str:
    """Hash of a canonical dataset's data (manifest, classes, shards), not of its reports: the data
    version validate records and preprocess carries into every later step. The shards enter by
    the sha256 index.json records for them (validate checks each shard against it)."""
    root = Path(root)
    h = hashlib.sha256()
    files = [root / "manifest.parquet", root / "classes.json"]
    files += [root / INDEX_FILE] if (root / INDEX_FILE).is_file() else sorted((root / "shards").glob("*.npy"))
    for f in files:
        h.update(f.relative_to(root).as_posix().encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()
