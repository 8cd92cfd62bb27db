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

import json
import os
import re
import shutil
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
from medsynth.fileio import atomic_dir, write_json, write_parquet, write_text
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


def _derive(df: Any, ds: CanonicalDataset, cfg: ValidateConfig) -> Any:
    """Add the helper columns the suite checks (on a copy of the manifest)."""
    d = df.copy()
    d["_row"] = np.arange(len(d))
    # allowed value range per row: HU for CT in Hounsfield units, else by dtype (unknown: unbounded,
    # the dtype expectation reports it)
    lo = np.full(len(d), -np.inf)
    hi = np.full(len(d), np.inf)
    for dtype, (a, b) in cfg.dtype_ranges.items():
        m = (d["dtype"] == dtype).to_numpy()
        lo[m], hi[m] = a, b
    hu = (d["units"] == "HU").to_numpy()
    lo[hu], hi[hu] = cfg.hu_range
    d["_min_allowed"], d["_max_allowed"] = lo, hi
    # the stored image exists and has the manifest's shape
    shapes: dict[str, tuple[int, ...] | None] = {}
    for name in d["shard"].astype(str).unique():
        try:
            shapes[name] = tuple(ds.shard(name).shape)
        except (OSError, ValueError):
            shapes[name] = None
    ok = []
    for s, i, h, w in zip(d["shard"].astype(str), d["index"], d["height"], d["width"], strict=True):
        shp = shapes[s]
        ok.append(shp is not None and len(shp) == 3 and 0 <= i < shp[0] and shp[1:] == (h, w))
    d["_stored"] = ok
    # repeated pixels: keep one copy (train first), the others are duplicates or split leaks
    d["_dup_of"] = ""
    d["_leak_with"] = ""
    d["_cross_split_copies"] = 0
    rep = d[d["sha256"].duplicated(keep=False)]
    if len(rep):
        rep = rep.assign(_order=rep["split"].map(SPLIT_ORDER).fillna(3)).sort_values(["sha256", "_order", "_row"])
        for _, g in rep.groupby("sha256", sort=False):
            keep = g.iloc[0]
            for idx, r in g.iloc[1:].iterrows():
                cross = keep["split"] != r["split"] and keep["split"] != "" and r["split"] != ""
                if not cross:
                    d.at[idx, "_dup_of"] = keep["id"]
                elif cfg.allow_train_test_overlap:
                    d.at[idx, "_cross_split_copies"] = 1
                else:
                    d.at[idx, "_leak_with"] = f"{keep['id']} ({keep['split']})"
    return d


def build_suite(gx: Any, name: str, classes: list[str], cfg: ValidateConfig) -> Any:
    """The expectation suite; ``meta.reason`` names the quarantine reason of record-level checks."""
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
        rec("duplicate_id", E.ExpectColumnValuesToBeUnique(column="id")),
        rec("missing_image", E.ExpectColumnValuesToBeInSet(column="_stored", value_set=[True])),
        rec("duplicate", E.ExpectColumnValuesToBeInSet(column="_dup_of", value_set=[""])),
        rec("train_test_leak", E.ExpectColumnValuesToBeInSet(column="_leak_with", value_set=[""])),
        # reported, not quarantined: every known class should be present
        table("class_missing", E.ExpectColumnDistinctValuesToContainSet(column="class_name", value_set=list(classes))),
    ]:
        suite.add_expectation(exp)
    return suite


def run_suite(d: Any, classes: list[str], cfg: ValidateConfig) -> Any:
    """Validate the derived manifest with GE (ephemeral context, no progress bars)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    batch = (
        ctx.data_sources.add_pandas("medsynth")
        .add_dataframe_asset("manifest")
        .add_batch_definition_whole_dataframe("all")
        .get_batch(batch_parameters={"dataframe": d})
    )
    suite = ctx.suites.add(build_suite(gx, "medsynth_manifest", classes, cfg))
    return batch.validate(suite, result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["_row"]})


def expectation_label(r: Any) -> str:
    """A short stable name for one expectation result, e.g. ``values_to_be_between[std]``."""
    kw = r.expectation_config.kwargs
    col = kw.get("column") or (f"{kw['column_A']}>={kw['column_B']}" if "column_A" in kw else "table")
    return f"{r.expectation_config.type.removeprefix('expect_')}[{col}]"


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
        "duplicate_id": f"id {row['id']!r} appears more than once",
        "missing_image": f"shard {row['shard']} index {row['index']} missing or of another shape",
        "duplicate": f"same pixels (sha256) as {row['_dup_of']}",
        "train_test_leak": f"same pixels in split {row['split']!r} as {row['_leak_with']}",
    }.get(reason, reason)


def rejected_dir(out_dir: Path) -> Path:
    """Where a rejected run's report and quarantine go (the good output is never replaced)."""
    return out_dir.with_name(out_dir.name + ".rejected")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:120]


def validate_dataset(cfg: ValidateConfig, ingest_dir: str | os.PathLike, out_dir: str | os.PathLike) -> tuple[ValidateResult, Path, Any]:
    """Validate ``ingest_dir`` into ``out_dir``; returns (result, folder written, GE result).

    Raises:
        InputError: the input is not a canonical dataset or lacks manifest columns.
        ValidationFailed: the failure share is above ``cfg.max_failure_share`` (the report is then
            written to ``<out_dir>.rejected`` and ``out_dir`` keeps its previous content).
    """
    import great_expectations  # noqa: F401 - imported before the clock starts (seconds, once)

    t0 = time.perf_counter()
    ingest_dir, out_dir = Path(ingest_dir), Path(out_dir)
    ds = CanonicalDataset(ingest_dir)
    df = ds.manifest
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"{ingest_dir / 'manifest.parquet'}: missing column(s) {', '.join(missing)}")
    input_hash = dataset_hash(ingest_dir)

    # 1-3. derived columns, GE suite
    d = _derive(df.reset_index(drop=True), ds, cfg)
    ge_result = run_suite(d, ds.classes, cfg)

    # 4. per-record reasons from the record-level expectations' unexpected rows
    reasons: dict[int, list[str]] = {}
    expectations = []
    for r in ge_result.results:
        meta = r.expectation_config.meta or {}
        res = r.result or {}
        rows = [int(u["_row"]) for u in res.get("unexpected_index_list") or [] if "_row" in u]
        expectations.append({
            "name": expectation_label(r), "level": meta.get("level", "table"), "reason": meta.get("reason", ""),
            "success": bool(r.success), "unexpected_count": int(res.get("unexpected_count") or 0),
        })
        if meta.get("level") == "record":
            for i in rows:
                if meta["reason"] not in reasons.setdefault(i, []):
                    reasons[i].append(meta["reason"])
    if not any(e["name"].startswith("table_row_count") and e["success"] for e in expectations):
        raise InputError(f"{ingest_dir / 'manifest.parquet'}: the manifest has no records")
    n = len(d)
    failed_rows = sorted(reasons)
    share = len(failed_rows) / n
    reason_counts = dict(Counter(x for i in failed_rows for x in reasons[i]).most_common())
    passing = d.drop(index=failed_rows)
    balance = class_balance(passing, ds.classes, cfg.max_class_imbalance)
    passed = share <= cfg.max_failure_share
    summary = {
        "input": str(ingest_dir), "input_hash": input_hash, "classes": ds.classes,
        "n_checked": n, "n_failed": len(failed_rows), "n_passed": n - len(failed_rows),
        "failure_share": share, "max_failure_share": cfg.max_failure_share, "passed": passed,
        "reasons": reason_counts, "class_balance": balance,
        "cross_split_copies_allowed": int(d["_cross_split_copies"].sum()),
        "expectations": expectations, "config": to_dict(cfg),
    }
    failed = []
    for i in failed_rows:
        row = d.iloc[i]
        failed.append({
            "id": str(row["id"]), "source_file": str(row["source_file"]), "split": str(row["split"]),
            "class_name": str(row["class_name"]), "label": int(row["label"]), "sha256": str(row["sha256"]),
            "reasons": reasons[i], "details": {x: _detail(x, row, cfg) for x in reasons[i]},
            "image": f"images/{i:07d}_{_safe(str(row['id']))}.npy" if row["_stored"] else None,
        })

    # 5. write: the validated dataset when passed, else only the report next to it
    dest = out_dir if passed else rejected_dir(out_dir)
    with atomic_dir(dest) as tmp:
        qdir = tmp / "quarantine"
        (qdir / "images").mkdir(parents=True)
        for f, i in zip(progress(failed, desc="quarantine", unit="img"), failed_rows, strict=True):
            if f["image"]:
                np.save(qdir / f["image"], ds.image(i))
        with open(qdir / "records.jsonl", "w") as fh:
            for f in failed:
                fh.write(json.dumps(f) + "\n")
        data_hash = ""
        if passed:
            write_parquet(passing[MANIFEST_COLUMNS], tmp / "manifest.parquet")
            shutil.copy2(ingest_dir / "classes.json", tmp / "classes.json")
            (tmp / "shards").mkdir()
            for s in progress(sorted(passing["shard"].astype(str).unique()), desc="copy shards", unit="shard"):
                shutil.copy2(ingest_dir / "shards" / f"{s}.npy", tmp / "shards" / f"{s}.npy")
            data_hash = dataset_hash(tmp)
        summary["data_hash"] = data_hash
        write_json(tmp / "ge_result.json", ge_result.to_json_dict())
        write_text(tmp / "report.md", report_md(summary, expectations, failed))
        write_json(tmp / "validate_report.json", summary)
    if passed:  # a stale report of an earlier rejected run would only mislead
        shutil.rmtree(rejected_dir(out_dir), ignore_errors=True)
    result = ValidateResult(
        out_dir=dest, n_checked=n, n_failed=len(failed_rows), failure_share=share, reasons=reason_counts,
        expectations={e["name"]: e["success"] for e in expectations}, class_balance=balance,
        data_hash=data_hash or input_hash, seconds=time.perf_counter() - t0,
    )
    return result, dest, summary


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
