"""Ingest: read real medical images from their sources into one canonical dataset.

1. Resolve the dataset's sources (params.yaml ``ingest.datasets.<name>``) under the data folder.
2. Read each source with its reader (npz, PNG/JPEG folders, DICOM with de-identification, NIfTI).
3. Records that are bad alone go to ``quarantine/records.jsonl`` with their reason; a source that
   is unusable as a whole (corrupt, unknown type, empty) stops the step with one clear line.
4. Stream the records into fixed-size shards (``ingest.shard_size`` images each) in a staging folder
   beside the output, then swap it in: a failed ingest never replaces or damages the previous good
   output, and memory is bounded by one shard per image shape, not by the dataset.
5. Killed (even with kill -9)? The same command resumes: the finished shards in the staging folder
   are kept (when the sources and settings are the same) and only the rest is written.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medsynth.config import params_defaults, to_dict
from medsynth.dataset import DatasetWriter, split_class_counts
from medsynth.deid import check_name, safe_label, scrub_path
from medsynth.errors import ConfigError, InputError
from medsynth.fileio import files_stamp, replace_dir, sha256_tree, staging_dir, write_json
from medsynth.progress import progress
from medsynth.project import ProjectConfig
from medsynth.readers import SourceConfig, read_source


@dataclass(frozen=True)
@params_defaults("ingest")
class IngestConfig:
    """``ingest:`` in params.yaml."""

    dataset: str
    limit_per_class: int | None
    shard_size: int
    datasets: dict[str, list[SourceConfig]]

    def check(self) -> None:
        if self.dataset not in self.datasets:
            raise ConfigError(
                f"ingest.dataset: unknown dataset {self.dataset!r}; valid: {', '.join(sorted(self.datasets))}"
            )
        if self.limit_per_class is not None and self.limit_per_class < 1:
            raise ConfigError("ingest.limit_per_class: must be a positive integer or null")
        if self.shard_size < 1:
            raise ConfigError(f"ingest.shard_size: must be a positive integer, got {self.shard_size}")

    @property
    def sources(self) -> list[SourceConfig]:
        return self.datasets[self.dataset]


@dataclass
class IngestResult:
    out_dir: Path
    n_images: int
    n_quarantined: int
    data_hash: str
    counts: dict[str, dict[str, int]]
    seconds: float
    n_shards: int = 0
    resumed_shards: int = 0


def class_list(sources: list[SourceConfig]) -> tuple[list[str], list[str]]:
    """Classes in declaration order with their modality; a name may appear once only."""
    classes: list[str] = []
    modalities: list[str] = []
    for src in sources:
        for c in src.classes:
            if c in classes:
                i = classes.index(c)
                if modalities[i] != src.modality.value:
                    raise ConfigError(f"class {c!r} is declared with two modalities ({modalities[i]}, {src.modality.value})")
                continue
            classes.append(c)
            modalities.append(src.modality.value)
    return classes, modalities


def ingest_sources(
    sources: list[SourceConfig],
    data_dir: Path,
    out_dir: Path,
    limit_per_class: int | None = None,
    classes: list[str] | None = None,
    modalities: list[str] | None = None,
    dataset: str | None = None,
    shard_size: int | None = None,
) -> IngestResult:
    """Read ``sources`` (paths relative to ``data_dir``) into a canonical dataset at ``out_dir``.

    ``classes``/``modalities`` fix the label space (e.g. a monitoring batch must use the
    reference's labels); by default they come from the sources in declaration order. ``dataset``
    names the data in ``ingest_report.json`` (``ingest.dataset``, or ``input-<name>`` for ``--input``).
    ``shard_size`` is the number of images per shard (``ingest.shard_size`` when None).

    Raises:
        InputError: a source is missing, corrupt, empty or of an unknown type, or nothing usable was read.
    """
    t0 = time.perf_counter()
    if classes is None:
        classes, modalities = class_list(sources)
    assert modalities is not None
    for c in classes:  # class names land in every artifact: none may look like an identifier
        check_name(c, "a class name", "name the classes with --classes (or in params.yaml) instead")
    if shard_size is None:
        shard_size = IngestConfig().shard_size
    staging = staging_dir(out_dir)
    fingerprint = json.dumps([[to_dict(s) for s in sources], str(data_dir), limit_per_class, dataset,
                              [files_stamp(_source_path(s, data_dir)) for s in sources]], default=str)
    writer = DatasetWriter(classes, modalities, root=staging, shard_size=shard_size, fingerprint=fingerprint)
    if writer.resumed_shards:
        print(f"ingest: resuming {staging}: {writer.resumed_shards} finished shard(s) kept", flush=True)
    try:
        rejected = _read_all(sources, data_dir, writer, limit_per_class)
    except Exception:  # a bad source: nothing to resume (a kill or Ctrl-C keeps the staging folder)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    tmp = writer.write()  # the staging folder is complete: reports, then swap it in
    qdir = tmp / "quarantine"
    qdir.mkdir(exist_ok=True)
    with open(qdir / "records.jsonl", "w") as f:
        for r in rejected:
            f.write(json.dumps(r) + "\n")
    counts = split_class_counts(tmp)
    n_images = sum(sum(c.values()) for c in counts.values())
    data_hash = sha256_tree(tmp)
    write_json(tmp / "ingest_report.json", {
        "n_images": n_images,
        "n_quarantined": len(rejected),
        "counts": counts,
        "classes": classes,
        "dataset": dataset,
        "data_hash": data_hash,
        "n_shards": len(writer.shards), "shard_size": shard_size,
        "sources": [to_dict(s) | {"path": scrub_path(s.path)} for s in sources],
    })
    replace_dir(tmp, out_dir)
    return IngestResult(Path(out_dir), n_images, len(rejected), data_hash, counts, time.perf_counter() - t0,
                        len(writer.shards), writer.resumed_shards)


def _read_all(sources: list[SourceConfig], data_dir: Path, writer: DatasetWriter,
              limit_per_class: int | None) -> list[dict[str, Any]]:
    """Every record of ``sources`` into ``writer``; returns the rejected records with their reasons."""
    rejected: list[dict[str, Any]] = []
    kept: dict[tuple[str, str], int] = defaultdict(int)

    def reject(what: str, reason: str) -> None:
        rejected.append({"record": what, "reason": reason})

    for src in sources:
        path = _source_path(src, data_dir)
        for rec in progress(read_source(src, path, reject, data_dir), desc=f"ingest {path.name}", unit="img"):
            if src.split and not rec.split:
                rec.split = src.split
            if rec.class_name not in writer.classes:  # a folder name, maybe a patient's: never stored as is
                reject(rec.id, f"{rec.source_file}: class {safe_label(rec.class_name)} not in {writer.classes}")
                continue
            if limit_per_class is not None:
                k = (rec.split, rec.class_name)
                if kept[k] >= limit_per_class:
                    continue
                kept[k] += 1
            writer.add(rec)
    if len(writer) == 0:
        reasons = "; ".join(r["reason"] for r in rejected[:3])
        raise InputError(f"{data_dir}: no usable images in the sources" + (f" ({reasons})" if reasons else ""))
    return rejected


def _source_path(src: SourceConfig, data_dir: Path) -> Path:
    path = Path(src.path)
    path = path if path.is_absolute() else data_dir / path
    if not path.exists():
        raise InputError(f"{path}: no such file or folder (set project.data_dir or MEDSYNTH_DATA_DIR)")
    return path


def run(cfg: IngestConfig, project: ProjectConfig, out_dir: str | os.PathLike, track: bool = True) -> IngestResult:
    """The ingest step: read the configured dataset into ``out_dir`` and log it to MLflow."""
    result = ingest_sources(cfg.sources, project.data_path(), Path(out_dir), cfg.limit_per_class, dataset=cfg.dataset,
                            shard_size=cfg.shard_size)
    if track:
        import mlflow

        from medsynth.tracking import step_run

        with step_run(project, "ingest", to_dict(cfg) | {"dataset": cfg.dataset}, result.data_hash):
            mlflow.log_metrics({
                "n_images": result.n_images,
                "n_quarantined": result.n_quarantined,
                "images_per_s": result.n_images / max(result.seconds, 1e-9),
            })
            mlflow.log_artifact(str(Path(out_dir) / "ingest_report.json"))
            mlflow.log_artifact(str(Path(out_dir) / "quarantine" / "records.jsonl"), "quarantine")
    return result
