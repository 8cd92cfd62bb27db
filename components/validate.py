"""Validate: a Great Expectations suite over the canonical dataset's manifest.

1. Read the ingest output (manifest + shards + classes) and check it has the manifest columns.
2. Add the derived columns the suite needs: per-row allowed value range (by dtype, or HU for CT in
   Hounsfield units), whether the stored image is really there, and which copy of a repeated image
   (same sha256) is a duplicate or a train/val/test leak. GE 1.x has no "keep the first copy"
   expectation, so that choice is made here and GE checks the resulting column.
3. Run the suite (record-level expectations quarantine rows; table-level ones are reported).
4. Failing records go to ``quarantine/`` (records.jsonl with id, source_file, reasons[]; the image
   itself as .npy, so nothing is lost); the passing rows form the validated dataset.
5. Too large a failure share fails the run (ValidationFailed, exit 3). The previous good output is
   then left untouched and the rejected run's report goes to ``<out>.rejected/`` instead.

The validated output is itself a canonical dataset (manifest of passing rows, classes.json and a
copy of the shards), so preprocess depends on one folder and DVC's deps say exactly what was read;
DVC's content-addressed cache stores the copied shards once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medsynth.components.validate_report import class_balance, report_md
from medsynth.config import params_defaults, to_dict
from medsynth.dataset import MANIFEST_COLUMNS, SPLITS, CanonicalDataset, dataset_hash
from medsynth.errors import ConfigError, InputError, ValidationFailed
from medsynth.fileio import replace_dir, write_json, write_text
from medsynth.progress import progress
from medsynth.project import ProjectConfig
from medsynth.readers import Modality

MODALITIES = tuple(m.value for m in Modality)  # DICOM codes (medsynth.readers.Modality)
SPLIT_ORDER = {"train": 0, "val": 1, "test": 2, "": 3}  # which copy of a repeated image is kept


@dataclass(frozen=True)
@params_defaults("validate")
class ValidateConfig:
    """``validate:`` in params.yaml."""

    max_failure_share: float
    min_std: float
    max_class_imbalance: float
    allow_train_test_overlap: bool
    min_side: int
    max_side: int
    # allowed dtypes and the value range each may hold; images in HU are checked against hu_range
    dtype_ranges: dict[str, tuple[float, float]]
    hu_range: tuple[float, float]  # padding outside the field of view reaches ~-4000

    def check(self) -> None:
        if not 0.0 <= self.max_failure_share <= 1.0:
            raise ConfigError("validate.max_failure_share: must be between 0 and 1")
        if self.min_std < 0:
            raise ConfigError("validate.min_std: must be >= 0")
        if not 1 <= self.min_side <= self.max_side <= 65536:
            raise ConfigError("validate.min_side/max_side: need 1 <= min_side <= max_side <= 65536")
        for name, (lo, hi) in {**self.dtype_ranges, "hu_range": self.hu_range}.items():
            if not lo < hi:
                raise ConfigError(f"validate: value range of {name} must be [low, high] with low < high, got [{lo}, {hi}]")


@dataclass
class ValidateResult:
    out_dir: Path
    n_checked: int
    n_failed: int
    failure_share: float
    reasons: dict[str, int]
    expectations: dict[str, bool]
    class_balance: dict[str, Any]
    data_hash: str
    seconds: float


@dataclass
class Repeats:
    """Which rows repeat another row's pixels or id, decided over the whole dataset at once.

    Kept compact (a few bytes per row, no strings) so that memory grows slowly with the dataset:
    pixel and id hashes are compared as 128-bit numbers, rows are numbered in shard order.
    """

    keep_of: np.ndarray  # int64 [N]: the row whose copy is kept, -1 when the row is the only/kept copy
    kind: np.ndarray  # int8 [N]: 0 none, 1 duplicate, 2 split leak, 3 cross-split copy allowed
    id_repeats: np.ndarray  # int32 [N]: how many rows carry this row's id


def _hash_hex(digests: Any) -> np.ndarray:
    """[N, 2] uint64: the first 128 bits of each sha256 hex digest."""
    out = np.empty((len(digests), 2), dtype=np.uint64)
    for i, v in enumerate(digests):
        out[i] = np.frombuffer(bytes.fromhex(v[:32].ljust(32, "0")), dtype=">u8")
    return out


def _hash_ids(ids: Any) -> np.ndarray:
    """[N] uint64: 64 bits of each id's sha256 (equal ids, equal numbers; the rare equal numbers of
    different ids are told apart by the ids themselves, see :func:`find_repeats`)."""
    import hashlib

    return np.array([int.from_bytes(hashlib.sha256(str(v).encode()).digest()[:8], "big") for v in ids], dtype=np.uint64)


def _repeated(keys: np.ndarray) -> np.ndarray:
    """Positions (ascending) of the rows whose key occurs more than once."""
    order = np.argsort(keys, kind="stable")
    eq = keys[order[1:]] == keys[order[:-1]]
    mask = np.zeros(len(keys), dtype=bool)
    mask[1:] |= eq
    mask[:-1] |= eq
    return np.sort(order[mask])


def find_repeats(sha: np.ndarray, split_code: np.ndarray, idh: np.ndarray, allow_overlap: bool,
                 ids_of: Any) -> Repeats:
    """Keep one copy of every repeated image (train first, then the earliest row); the others are
    duplicates (same split, or a split not yet assigned) or train/val/test leaks. Count every id's rows.

    ``sha`` holds 128 bits of each row's pixel sha256, ``split_code`` its split (0 train, 1 val,
    2 test, 3 none, 4+ any other value), ``idh`` 64 bits of its id's hash; ``ids_of(rows)`` returns
    the ids of the given rows. Only rows whose first 64 bits repeat are compared further, so the
    work and memory beyond the inputs stay a few bytes per row.
    """
    n = len(sha)
    keep_of = np.full(n, -1, dtype=np.int64)
    kind = np.zeros(n, dtype=np.int8)
    cand = _repeated(sha[:, 0]) if n else np.zeros(0, dtype=np.int64)
    if cand.size:
        sub, code = sha[cand], split_code[cand]
        order = np.lexsort((cand, np.minimum(code, 3), sub[:, 1], sub[:, 0]))
        s = sub[order]
        first = np.ones(len(cand), dtype=bool)
        first[1:] = (s[1:] != s[:-1]).any(axis=1)
        head = order[np.maximum.accumulate(np.where(first, np.arange(len(cand)), 0))]  # kept row of each run
        rep, keep = order[~first], head[~first]
        empty = SPLIT_ORDER[""]
        cross = (code[keep] != code[rep]) & (code[keep] != empty) & (code[rep] != empty)
        keep_of[cand[rep]] = cand[keep]
        kind[cand[rep]] = np.where(~cross, 1, 3 if allow_overlap else 2)
    id_repeats = np.ones(n, dtype=np.int32)
    cand = _repeated(idh) if n else np.zeros(0, dtype=np.int64)
    if cand.size:
        names = ids_of(cand)
        counts = Counter(names)
        id_repeats[cand] = [counts[x] for x in names]
    return Repeats(keep_of, kind, id_repeats)


def shard_problem(ds: CanonicalDataset, entry: dict[str, Any]) -> str:
    """Why a shard's images cannot be trusted ("" when they can): missing, unreadable, or not the
    bytes index.json recorded."""
    from medsynth.fileio import sha256_file

    path = ds.shard_path(entry["name"])
    if not path.is_file():
        return f"shard {entry['name']} missing"
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, _ = read(f)  # the header only, no pixels
    except (OSError, ValueError) as exc:
        return f"shard {entry['name']} unreadable ({exc})"
    if entry.get("n") is not None and (len(shape) != 3 or shape[0] != entry["n"]):
        return f"shard {entry['name']} holds {shape}, index.json says {entry['n']} images"
    if entry.get("sha256") and sha256_file(path) != entry["sha256"]:
        return f"shard {entry['name']} corrupt (sha256 differs from index.json)"
    return ""


def _derive(d: Any, ds: CanonicalDataset, cfg: ValidateConfig, start: int, rep: Repeats, problem: str,
            ids_of: dict[int, tuple[str, str]]) -> Any:
    """Add the helper columns the suite checks to one shard's rows (global row numbers from ``start``)."""
    d = d.reset_index(drop=True)
    n = len(d)
    rows = np.arange(start, start + n)
    d["_row"] = rows
    d["_pos"] = np.arange(n)  # position in its shard's rows
    # allowed value range per row: HU for CT in Hounsfield units, else by dtype (unknown: unbounded,
    # the dtype expectation reports it)
    lo = np.full(n, -np.inf)
    hi = np.full(n, np.inf)
    for dtype, (a, b) in cfg.dtype_ranges.items():
        m = (d["dtype"] == dtype).to_numpy()
        lo[m], hi[m] = a, b
    hu = (d["units"] == "HU").to_numpy()
    lo[hu], hi[hu] = cfg.hu_range
    d["_min_allowed"], d["_max_allowed"] = lo, hi
    # the stored image exists (in a sound shard) and has the manifest's shape
    shp = None if problem else tuple(ds.shard(d["shard"].iloc[0]).shape) if n else None
    d["_stored"] = [shp is not None and len(shp) == 3 and 0 <= i < shp[0] and shp[1:] == (h, w)
                    for i, h, w in zip(d["index"], d["height"], d["width"], strict=True)]
    d["_shard_problem"] = problem
    # repeated pixels: one copy kept (decided over the whole dataset), the others flagged
    kind, keep = rep.kind[rows], rep.keep_of[rows]
    d["_dup_of"] = [ids_of[k][0] if t == 1 else "" for t, k in zip(kind, keep, strict=True)]
    d["_leak_with"] = [f"{ids_of[k][0]} ({ids_of[k][1]})" if t == 2 else "" for t, k in zip(kind, keep, strict=True)]
    d["_cross_split_copies"] = (kind == 3).astype(int)
    d["_id_repeats"] = rep.id_repeats[rows]
    return d


def build_suite(gx: Any, name: str, classes: list[str], cfg: ValidateConfig, level: str) -> Any:
    """The expectation suite of one ``level``: "record" expectations run on every shard's rows and
    quarantine what fails (``meta.reason``); "table" ones run once, on the dataset's summary (one
    row per class present), and are reported."""
    E = gx.expectations

    def rec(reason: str, exp: Any) -> Any:
        exp.meta = {"reason": reason, "level": "record"}
        return exp

    def table(reason: str, exp: Any) -> Any:
        exp.meta = {"reason": reason, "level": "table"}
        return exp

    suite = gx.ExpectationSuite(name=name)
    for exp in [
        table("empty", E.ExpectTableRowCountToBeBetween(min_value=1)),
        rec("shape", E.ExpectColumnValuesToBeBetween(column="height", min_value=cfg.min_side, max_value=cfg.max_side)),
        rec("shape", E.ExpectColumnValuesToBeBetween(column="width", min_value=cfg.min_side, max_value=cfg.max_side)),
        rec("dtype", E.ExpectColumnValuesToBeInSet(column="dtype", value_set=sorted(cfg.dtype_ranges))),
        rec("value_range", E.ExpectColumnPairValuesAToBeGreaterThanB(column_A="min", column_B="_min_allowed", or_equal=True)),
        rec("value_range", E.ExpectColumnPairValuesAToBeGreaterThanB(column_A="_max_allowed", column_B="max", or_equal=True)),
        rec("nan_or_inf", E.ExpectColumnValuesToBeBetween(column="nan_count", min_value=0, max_value=0)),
        rec("constant", E.ExpectColumnValuesToBeBetween(column="std", min_value=cfg.min_std, strict_min=True)),
        rec("unknown_label", E.ExpectColumnValuesToBeInSet(column="label", value_set=list(range(len(classes))))),
        rec("unknown_label", E.ExpectColumnValuesToBeInSet(column="class_name", value_set=list(classes))),
        rec("modality", E.ExpectColumnValuesToBeInSet(column="modality", value_set=list(MODALITIES))),
        rec("bad_split", E.ExpectColumnValuesToBeInSet(column="split", value_set=[*SPLITS, ""])),
        rec("duplicate_id", E.ExpectColumnValuesToBeBetween(column="_id_repeats", min_value=1, max_value=1)),
        rec("missing_image", E.ExpectColumnValuesToBeInSet(column="_stored", value_set=[True])),
        rec("duplicate", E.ExpectColumnValuesToBeInSet(column="_dup_of", value_set=[""])),
        rec("train_test_leak", E.ExpectColumnValuesToBeInSet(column="_leak_with", value_set=[""])),
        # reported, not quarantined: every known class should be present
        table("class_missing", E.ExpectColumnDistinctValuesToContainSet(column="class_name", value_set=list(classes))),
    ]:
        if exp.meta["level"] == level:
            suite.add_expectation(exp)
    return suite


class Suite:
    """A GE context with the record- and table-level suites, built once and run on many frames."""

    def __init__(self, classes: list[str], cfg: ValidateConfig):
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        ctx = gx.get_context(mode="ephemeral")
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        self.batch_def = (ctx.data_sources.add_pandas("medsynth").add_dataframe_asset("manifest")
                          .add_batch_definition_whole_dataframe("all"))
        self.suites = {lv: ctx.suites.add(build_suite(gx, f"medsynth_{lv}", classes, cfg, lv))
                       for lv in ("record", "table")}

    def run(self, d: Any, level: str) -> Any:
        batch = self.batch_def.get_batch(batch_parameters={"dataframe": d})
        return batch.validate(self.suites[level],
                              result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["_row"]})


def expectation_label(r: Any) -> str:
    """A short stable name for one expectation result (a GE result or its JSON document), e.g.
    ``values_to_be_between[std]``."""
    conf = r["expectation_config"] if isinstance(r, dict) else r.expectation_config.to_json_dict()
    kw = conf["kwargs"]
    col = kw.get("column") or (f"{kw['column_A']}>={kw['column_B']}" if "column_A" in kw else "table")
    return f"{conf['type'].removeprefix('expect_')}[{col}]"


def _detail(reason: str, row: Any, cfg: ValidateConfig) -> str:
    """One human-readable line on why ``row`` failed ``reason``."""
    return {
        "shape": f"{row['height']}x{row['width']} outside [{cfg.min_side}, {cfg.max_side}]",
        "dtype": f"dtype {row['dtype']} not in {sorted(cfg.dtype_ranges)}",
        "value_range": f"values [{row['min']:.6g}, {row['max']:.6g}] outside [{row['_min_allowed']:.6g}, {row['_max_allowed']:.6g}] for {row['dtype']}/{row['units']}",
        "nan_or_inf": f"{row['nan_count']} NaN/inf pixels",
        "constant": f"std {row['std']:.4g} <= min_std {cfg.min_std}",
        "unknown_label": f"label {row['label']} / class {row['class_name']!r} not in the known classes",
        "modality": f"modality {row['modality']!r} not in {list(MODALITIES)}",
        "bad_split": f"split {row['split']!r} not in {list(SPLITS)} or empty",
        "duplicate_id": f"id {row['id']!r} appears {row['_id_repeats']} times",
        "missing_image": row["_shard_problem"] or f"shard {row['shard']} index {row['index']} missing or of another shape",
        "duplicate": f"same pixels (sha256) as {row['_dup_of']}",
        "train_test_leak": f"same pixels in split {row['split']!r} as {row['_leak_with']}",
    }.get(reason, reason)


def rejected_dir(out_dir: Path) -> Path:
    """Where a rejected run's report and quarantine go (the good output is never replaced)."""
    return out_dir.with_name(out_dir.name + ".rejected")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:120]


def _scan(ds: CanonicalDataset) -> tuple[list[dict[str, Any]], dict[str, str], Any]:
    """Pass 1 over the shards: each shard's soundness and the compact columns of every row
    (pixel hash, split code, id hash: 26 bytes a row, in arrays sized once)."""
    entries, problems = ds.shard_entries(), {}
    total = len(ds)
    sha = np.empty((total, 2), dtype=np.uint64)
    idh = np.empty(total, dtype=np.uint64)
    split = np.empty(total, dtype=np.int16)
    codes = dict(SPLIT_ORDER)  # split value -> code (other values numbered from 4 as they come)
    pos = 0
    for e in progress(entries, desc="validate: scan shards", unit="shard"):
        problems[e["name"]] = shard_problem(ds, e)
        r = ds.shard_rows(e["name"], ["sha256", "id", "split"])
        e["rows"], end = len(r), pos + len(r)
        sha[pos:end] = _hash_hex(r["sha256"].astype(str).tolist())
        idh[pos:end] = _hash_ids(r["id"].astype(str).tolist())
        split[pos:end] = [codes.setdefault(x, len(codes)) for x in r["split"].astype(str)]
        pos = end
    if pos != total:
        raise InputError(f"{ds.root / 'manifest.parquet'}: {total} rows, but its shards' rows add up to {pos}")
    return entries, problems, (sha, split, idh)


def _ids_of(ds: CanonicalDataset, entries: list[dict[str, Any]], rows: np.ndarray) -> dict[int, tuple[str, str]]:
    """(id, split) of the given global rows (the kept copies that quarantine messages name)."""
    starts = np.cumsum([0] + [e["rows"] for e in entries])
    out: dict[int, tuple[str, str]] = {}
    for k in np.unique(np.searchsorted(starts, rows, side="right") - 1):
        r = ds.shard_rows(entries[k]["name"], ["id", "split"])
        for g in rows[(rows >= starts[k]) & (rows < starts[k + 1])]:
            out[int(g)] = (str(r["id"].iloc[g - starts[k]]), str(r["split"].iloc[g - starts[k]]))
    return out


class Merged:
    """One GE-style result over all shards, added to shard by shard (nothing per shard is kept):
    per expectation, success if it held in every shard, unexpected rows summed, the first
    ``limit`` listed."""

    LISTS = ("unexpected_index_list", "partial_unexpected_list", "unexpected_list", "partial_unexpected_index_list")

    def __init__(self, limit: int = 200) -> None:
        self.limit = limit
        self.docs: dict[str, dict[str, Any]] = {}
        self.rows: dict[str, dict[str, Any]] = {}
        self.shards = 0

    def add(self, docs: list[dict[str, Any]]) -> None:
        """One shard's expectation results (their JSON documents)."""
        self.shards += 1
        for doc in docs:
            name, meta, out = expectation_label(doc), doc["expectation_config"].get("meta") or {}, doc.get("result") or {}
            e = self.rows.setdefault(name, {"name": name, "level": meta.get("level", "table"),
                                            "reason": meta.get("reason", ""), "success": True, "unexpected_count": 0})
            e["success"] &= bool(doc["success"])
            e["unexpected_count"] += int(out.get("unexpected_count") or 0)
            doc = json.loads(json.dumps(doc))
            for key in self.LISTS:
                if isinstance((doc.get("result") or {}).get(key), list):
                    doc["result"][key] = doc["result"][key][: self.limit]
            if name not in self.docs:
                self.docs[name] = doc
                continue
            m = self.docs[name]
            m["success"] = bool(m["success"] and doc["success"])
            for key in ("unexpected_count", "element_count"):
                if key in (m.get("result") or {}):
                    m["result"][key] += int((doc.get("result") or {}).get(key) or 0)
            for key in self.LISTS:
                if isinstance((m.get("result") or {}).get(key), list):
                    m["result"][key] = (m["result"][key] + list((doc.get("result") or {}).get(key) or []))[: self.limit]

    def result(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """(the merged GE result document, the report's expectation rows)."""
        rows = list(self.rows.values())
        ge = {"success": all(e["success"] for e in rows), "results": list(self.docs.values()),
              "statistics": {"evaluated_expectations": len(rows), "successful_expectations": sum(e["success"] for e in rows),
                             "shards": max(self.shards - 1, 0)}}
        return ge, rows


CHECK_FORMAT = "medsynth.validate-batch/1"
BATCH_ROWS = 32_768  # records per run of the suite (a few tens of MB of derived columns)


def shard_cache(out_dir: Path) -> Path:
    """Where each shard's outcome is kept between runs (beside the output, outside DVC's output)."""
    return out_dir.with_name(f".{out_dir.name}.shards")


def _shard_key(entry: dict[str, Any], rows: Any, settings: str, problem: str, rep: Repeats, start: int, stop: int,
               ids_of: dict[int, tuple[str, str]]) -> str:
    """A hash of everything one shard's outcome depends on: its bytes and rows, the settings, its
    place in the dataset and what the whole-dataset checks decided for its rows."""
    import hashlib

    from medsynth.dataset import rows_sha256, rows_table

    h = hashlib.sha256()
    kept = [ids_of.get(int(k), ("", "")) for k in rep.keep_of[start:stop]]
    for part in (entry.get("sha256") or "", rows_sha256(rows_table(rows)), settings, problem, f"{start}:{stop}",
                 rep.kind[start:stop].tobytes().hex(), rep.id_repeats[start:stop].tobytes().hex(), json.dumps(kept)):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


def check_rows(suite: Suite, d: Any, cfg: ValidateConfig) -> dict[str, Any]:
    """The record-level suite on derived rows (one or more shards): the failing records with their
    reasons, the suite's results (JSON), the classes present and the cross-split copies allowed."""
    res = suite.run(d, "record")
    start = int(d["_row"].iloc[0])
    reasons: dict[int, list[str]] = {}
    for r in res.results:
        meta = r.expectation_config.meta or {}
        for u in (r.result or {}).get("unexpected_index_list") or []:
            if "_row" in u and meta["reason"] not in reasons.setdefault(int(u["_row"]) - start, []):
                reasons[int(u["_row"]) - start].append(meta["reason"])
    failed = []
    for i in sorted(reasons):
        row = d.iloc[i]
        failed.append({"id": str(row["id"]), "source_file": str(row["source_file"]), "split": str(row["split"]),
                       "class_name": str(row["class_name"]), "label": int(row["label"]), "sha256": str(row["sha256"]),
                       "reasons": reasons[i], "details": {x: _detail(x, row, cfg) for x in reasons[i]},
                       "image": f"images/{start + i:07d}_{_safe(str(row['id']))}.npy" if row["_stored"] else None,
                       "shard": str(row["shard"]), "index": int(row["index"]), "pos": int(row["_pos"])})
    return {"failed": failed, "ge": [r.to_json_dict() for r in res.results],
            "classes_present": sorted(d["class_name"].astype(str).unique()), "cross": int(d["_cross_split_copies"].sum())}


def batches(entries: list[dict[str, Any]], rows: int | None = None) -> list[list[dict[str, Any]]]:
    """Consecutive shards in groups of at most ``rows`` records (``BATCH_ROWS``; a larger shard is a
    group of its own): the suite runs once per group, as its fixed cost per run outweighs a shard's."""
    limit = rows or BATCH_ROWS
    out: list[list[dict[str, Any]]] = []
    size = 0
    for e in entries:
        if not out or (size and size + e["rows"] > limit):
            out.append([])
            size = 0
        out[-1].append(e)
        size += e["rows"]
    return out


def validate_dataset(cfg: ValidateConfig, ingest_dir: str | os.PathLike, out_dir: str | os.PathLike) -> tuple[ValidateResult, Path, Any]:
    """Validate ``ingest_dir`` into ``out_dir``; returns (result, folder written, summary).

    Shard by shard: memory holds one shard's rows plus a few bytes per row for the checks that
    span the dataset (repeated pixels, repeated ids). A shard whose file is missing or not the
    bytes index.json recorded has its records quarantined (``missing_image``) and the rest goes on.

    Raises:
        InputError: the input is not a canonical dataset or lacks manifest columns.
        ValidationFailed: the failure share is above ``cfg.max_failure_share`` (the report is then
            written to ``<out_dir>.rejected`` and ``out_dir`` keeps its previous content).
    """
    import great_expectations  # noqa: F401 - imported before the clock starts (seconds, once)
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    ingest_dir, out_dir = Path(ingest_dir), Path(out_dir)
    ds = CanonicalDataset(ingest_dir)
    columns = pq.ParquetFile(os.fspath(ingest_dir / "manifest.parquet")).schema_arrow.names
    missing = [c for c in MANIFEST_COLUMNS if c not in columns]
    if missing:
        raise InputError(f"{ingest_dir / 'manifest.parquet'}: missing column(s) {', '.join(missing)}")
    input_hash = dataset_hash(ingest_dir)

    # 1. pass 1: shard soundness, repeated pixels and ids over the whole dataset
    entries, problems, (sha, split_code, idh) = _scan(ds)
    def ids_at(rows: np.ndarray) -> list[str]:
        found = _ids_of(ds, entries, rows)
        return [found[int(k)][0] for k in rows]

    rep = find_repeats(sha, split_code, idh, cfg.allow_train_test_overlap, ids_at)
    del sha, idh
    ids_of = _ids_of(ds, entries, np.unique(rep.keep_of[(rep.kind == 1) | (rep.kind == 2)]))
    suite = Suite(ds.classes, cfg)

    # 2. pass 2: the record-level suite on each shard; failing records are listed with their reasons
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=_mkparent(out_dir)))
    try:
        qdir = work / "quarantine"
        (qdir / "images").mkdir(parents=True)
        merged, failed_head = Merged(), []
        n = n_failed = cross = 0
        reason_counts: Counter = Counter()
        passing_counts: dict[str, Counter] = {}
        classes_present: set[str] = set()
        passing = PassingWriter(ds, work)  # written as it goes; discarded when the run is rejected
        cache = shard_cache(out_dir)
        cache.mkdir(parents=True, exist_ok=True)
        used: set[Path] = set()
        reused = 0
        settings = json.dumps(to_dict(cfg), sort_keys=True, default=str) + CHECK_FORMAT
        groups = batches(entries)
        with open(qdir / "records.jsonl", "w") as fh:
            for group in progress(groups, desc="validate: check shards", unit="batch"):
                rows = [ds.shard_rows(e["name"]) for e in group]
                starts = np.cumsum([n] + [len(r) for r in rows])
                keys = [_shard_key(e, r, settings, problems[e["name"]], rep, int(a), int(b), ids_of)
                        for e, r, a, b in zip(group, rows, starts[:-1], starts[1:], strict=True)]
                key = hashlib.sha256("".join(keys).encode()).hexdigest()[:32]
                used.add(cache / f"{key}.json")
                if (cache / f"{key}.json").is_file():  # checked before, same inputs: the same outcome
                    done = json.loads((cache / f"{key}.json").read_text())
                    reused += len(group)
                else:
                    d = pd_concat([_derive(r, ds, cfg, int(a), rep, problems[e["name"]], ids_of)
                                   for e, r, a in zip(group, rows, starts[:-1], strict=True)])
                    done = check_rows(suite, d, cfg)
                    del d
                    write_json(cache / f"{key}.json", done)
                merged.add(done["ge"])
                failed_at: dict[str, list[int]] = {}
                for f in done["failed"]:
                    if f["image"]:  # nothing is lost: the pixels go with the record
                        np.save(qdir / f["image"], np.asarray(ds.shard(f["shard"])[int(f["index"])]))
                    fh.write(json.dumps({k: v for k, v in f.items() if k not in ("index", "pos")}) + "\n")
                    if len(failed_head) < 50:
                        failed_head.append(f)
                    reason_counts.update(f["reasons"])
                    failed_at.setdefault(f["shard"], []).append(f["pos"])
                classes_present.update(done["classes_present"])
                cross += done["cross"]
                for e, r in zip(group, rows, strict=True):
                    keep = r.drop(index=failed_at.get(e["name"], []))
                    for split, cls in zip(keep["split"].astype(str), keep["class_name"].astype(str), strict=True):
                        passing_counts.setdefault(split, Counter())[cls] += 1
                    passing.add(e, keep[MANIFEST_COLUMNS])
                    ds.release(e["name"])
                n = int(starts[-1])
                n_failed += len(done["failed"])
        for old in set(cache.glob("*.json")) - used:  # outcomes of earlier inputs: no longer needed
            old.unlink()
        if reused:
            print(f"validate: {reused} of {len(entries)} shard(s) unchanged, outcome reused from {cache}", flush=True)
        table = suite.run(pd_frame({"class_name": sorted(classes_present), "_row": range(len(classes_present))}),
                          "table")
        passing.close()
        merged.add([r.to_json_dict() for r in table.results])
        ge, expectations = merged.result()
        if not any(e["name"].startswith("table_row_count") and e["success"] for e in expectations):
            raise InputError(f"{ingest_dir / 'manifest.parquet'}: the manifest has no records")
        share = n_failed / n
        balance = class_balance({k: dict(v) for k, v in passing_counts.items()}, ds.classes, cfg.max_class_imbalance)
        passed = share <= cfg.max_failure_share
        summary = {
            "input": str(ingest_dir), "input_hash": input_hash, "classes": ds.classes,
            "n_checked": n, "n_failed": n_failed, "n_passed": n - n_failed,
            "failure_share": share, "max_failure_share": cfg.max_failure_share, "passed": passed,
            "reasons": dict(reason_counts.most_common()), "class_balance": balance,
            "cross_split_copies_allowed": cross, "n_shards": len(entries),
            "corrupt_shards": {k: v for k, v in problems.items() if v},
            "expectations": expectations, "config": to_dict(cfg),
        }

        # 3. the validated dataset when passed (the passing rows; the shards linked, not copied)
        data_hash = ""
        if passed:
            passing.finish()
            data_hash = dataset_hash(work)
        else:
            passing.discard()
        summary["data_hash"] = data_hash
        write_json(work / "ge_result.json", ge)
        write_text(work / "report.md", report_md(summary, expectations, failed_head))
        write_json(work / "validate_report.json", summary)
        dest = out_dir if passed else rejected_dir(out_dir)
        replace_dir(work, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if passed:  # a stale report of an earlier rejected run would only mislead
        shutil.rmtree(rejected_dir(out_dir), ignore_errors=True)
    result = ValidateResult(
        out_dir=dest, n_checked=n, n_failed=n_failed, failure_share=share, reasons=summary["reasons"],
        expectations={e["name"]: e["success"] for e in expectations}, class_balance=balance,
        data_hash=data_hash or input_hash, seconds=time.perf_counter() - t0,
    )
    return result, dest, summary


def _mkparent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.parent


def pd_frame(columns: dict[str, Any]) -> Any:
    import pandas as pd

    return pd.DataFrame(columns)


def pd_concat(frames: list[Any]) -> Any:
    import pandas as pd

    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


class PassingWriter:
    """The validated canonical dataset, written shard by shard: the passing rows (one row group per
    shard), the shards of those rows hard-linked (copied across file systems), then index and classes."""

    def __init__(self, ds: CanonicalDataset, root: Path) -> None:
        import pyarrow.parquet as pq

        from medsynth.dataset import manifest_schema

        self.ds, self.root, self.kept = ds, root, []
        (root / "shards").mkdir()
        self.writer = pq.ParquetWriter(os.fspath(root / "manifest.parquet"), manifest_schema())

    def add(self, entry: dict[str, Any], rows: Any) -> None:
        from medsynth.dataset import rows_table

        if not len(rows):
            return
        self.writer.write_table(rows_table(rows))
        src, dst = self.ds.shard_path(entry["name"]), self.root / "shards" / f"{entry['name']}.npy"
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
        self.kept.append({k: entry[k] for k in ("name", "n", "sha256") if k in entry} | {"rows": len(rows)})

    def close(self) -> None:
        self.writer.close()

    def finish(self) -> None:
        from medsynth.dataset import write_index

        write_index(self.root, self.ds.classes, self.ds.modalities, self.kept, int(self.ds.index.get("shard_size", 0)))

    def discard(self) -> None:
        (self.root / "manifest.parquet").unlink(missing_ok=True)
        shutil.rmtree(self.root / "shards", ignore_errors=True)


def failure_message(res: ValidateResult, cfg: ValidateConfig, ingest_dir: Path) -> str:
    top = ", ".join(f"{k} {v}" for k, v in list(res.reasons.items())[:3])
    return (f"{ingest_dir}: {res.failure_share:.1%} of {res.n_checked} records failed validation "
            f"(limit {cfg.max_failure_share:.1%}; top reasons: {top}); report in {res.out_dir / 'report.md'}")


def metrics_of(res: ValidateResult) -> dict[str, float]:
    """Flat numeric metrics (MLflow and the DVC metrics file)."""
    m: dict[str, float] = {
        "n_checked": res.n_checked, "n_failed": res.n_failed, "failure_share": res.failure_share,
        "images_per_s": res.n_checked / max(res.seconds, 1e-9),
    }
    for name, ok in res.expectations.items():
        m[f"expectation.{_safe(name)}"] = float(ok)
    for name, count in res.reasons.items():
        m[f"quarantined.{name}"] = count
    for split, ratio in res.class_balance["imbalance"].items():
        m[f"class_imbalance.{split}"] = ratio
    return m


def run(cfg: ValidateConfig, project: ProjectConfig, ingest_dir: str | os.PathLike,
        out_dir: str | os.PathLike, track: bool = True) -> ValidateResult:
    """The validate step: run the suite, quarantine failing records, log to MLflow.

    Raises:
        ValidationFailed: more than ``cfg.max_failure_share`` of the records failed.
    """
    ingest_dir = Path(ingest_dir)
    res, dest, summary = validate_dataset(cfg, ingest_dir, out_dir)
    if track:
        import mlflow

        from medsynth.tracking import step_run

        # raising inside the run marks it FAILED in MLflow, with the report attached
        with step_run(project, "validate", to_dict(cfg), summary["input_hash"]):
            mlflow.log_metrics(metrics_of(res))
            for name in ("ge_result.json", "report.md", "validate_report.json"):
                mlflow.log_artifact(str(dest / name))
            mlflow.log_artifact(str(dest / "quarantine" / "records.jsonl"), "quarantine")
            if dest != Path(out_dir):
                raise ValidationFailed(failure_message(res, cfg, ingest_dir))
    if dest != Path(out_dir):
        raise ValidationFailed(failure_message(res, cfg, ingest_dir))
    return res
