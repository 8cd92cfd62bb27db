"""Monitor: compare a new batch of real images with the champion's training data; decide on retraining.

A check (:func:`run`):

1. Load the reference: the prepared artifact the champion was trained on (its train split).
2. Ingest the batch with the reference's classes (any format ingest reads); records that are bad
   alone go to quarantine with their reason, the rest is checked.
3. Validate it with the same Great Expectations suite (failing records quarantined; the share is
   reported instead of failing the run: a monitor must look at what did arrive).
4. Pass it through the preprocess transform chain with the reference's settings.
5. Features per image (``medsynth.monitoring.image_features``) for reference (cached) and batch; Evidently
   DataDriftPreset over them; the HTML report and a JSON summary saved under ``<out>``.
6. Log both to MLflow (experiment ``monitor.experiment``) and append the check to the history.

A failing check appends an ``error`` event and re-raises: the history only grows and the model
registry is never touched here. The trigger decision is in ``components/trigger.py``, the check of
the champion's own outputs in ``components/monitor_outputs.py``; launching the retraining is the
caller's (CLI) job, because components never import the pipeline package.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medsynth.config import params_defaults, to_dict
from medsynth.errors import ConfigError, InputError
from medsynth.fileio import atomic_dir, atomic_path, read_parquet, write_json, write_parquet
from medsynth.monitoring.domain import DomainConfig, DomainResult, check_domain, envelope
from medsynth.monitoring.drift import DriftConfig, DriftResult, detect_drift
from medsynth.monitoring.history import History
from medsynth.monitoring.image_features import PCA, Embedder, embed_in_batches, feature_frame
from medsynth.monitoring.policy import PolicyConfig
from medsynth.prepared import PreparedData, to_unit
from medsynth.project import ProjectConfig

FEATURE_VERSION = "1"  # bump when the feature definitions change (invalidates reference caches)


@dataclass(frozen=True)
@params_defaults("monitor")
class MonitorConfig:
    """``monitor:`` in params.yaml."""

    reference: str  # prepared artifact of the champion's training data ("" = <artifacts>/preprocess)
    max_reference: int  # reference images sampled (seeded) for the tests
    max_batch_images: int  # larger batches are refused (bounded input)
    embedding_components: int  # PCA components of the domain embeddings (0 = no embeddings)
    extractor: str  # domain feature extractor folder ("" = <artifacts>/features/<features.name>)
    output_images: int  # generated images per champion-output check
    html_report: bool  # Evidently's HTML report (false: same tests, JSON summary only; ~5x faster)
    feedback_url: str  # SQLAlchemy URL ("" = sqlite:///<state>/feedback.db)
    experiment: str
    drift: DriftConfig
    domain: DomainConfig
    policy: PolicyConfig

    def check(self) -> None:
        if not 100 <= self.max_reference <= 200_000:
            raise ConfigError("monitor.max_reference: must be between 100 and 200000")
        if not 1 <= self.max_batch_images <= 1_000_000:
            raise ConfigError("monitor.max_batch_images: must be between 1 and 1000000")
        if not 0 <= self.embedding_components <= 32:
            raise ConfigError("monitor.embedding_components: must be between 0 and 32")
        if not self.drift.min_batch <= self.output_images <= 20_000:
            raise ConfigError("monitor.output_images: must be between drift.min_batch and 20000")


@dataclass
class CheckResult:
    """One check: where its report is, what it found."""

    out_dir: Path
    batch_hash: str
    drift: DriftResult
    n_images: int
    n_valid: int
    n_quarantined: int
    warnings: list[str]
    seconds: float
    run_id: str | None = None
    domain: DomainResult | None = None  # in-domain verdict (None for checks of generated outputs)

    @property
    def report_html(self) -> Path:
        return self.out_dir / "report.html"


def history_of(project: ProjectConfig) -> History:
    return History(project.state_path() / "monitoring" / "history.jsonl")


def reference_path(cfg: MonitorConfig, project: ProjectConfig, override: str | Path | None = None) -> Path:
    if override:
        return Path(override)
    if cfg.reference:
        p = Path(cfg.reference)
        return p if p.is_absolute() else project.root / p
    return project.artifacts_path() / "preprocess"


def load_reference(path: Path) -> PreparedData:
    """The champion's prepared training data; a clear error when it is not there."""
    if not (path / "meta.json").is_file():
        raise InputError(f"{path}: monitoring reference not found (the champion's prepared training data; "
                         "run `medsynth preprocess` or set monitor.reference)")
    prep = PreparedData.load(path)
    if prep.count("train") == 0:
        raise InputError(f"{path}: the reference has no training images")
    return prep


def _transform_of(prep: PreparedData):
    """The reference's own preprocess settings, so the batch sees the exact same chain."""
    from medsynth.components.preprocess import PreprocessConfig
    from medsynth.config import build

    names = {f.name for f in dataclasses.fields(PreprocessConfig)}
    conf = {k: v for k, v in (prep.meta.get("config") or {}).items() if k in names}
    return build(PreprocessConfig, conf, f"{prep.root / 'meta.json'}: config").transform()


def _reference_sizes(prep: PreparedData, ids: np.ndarray) -> np.ndarray | None:
    """Source side lengths of reference images, from the dataset it was prepared from (if still there)."""
    src = Path(str((prep.meta.get("source") or {}).get("path", "")))
    mf = src / "manifest.parquet"
    if not src.parts or not mf.is_file():
        return None
    import pyarrow.parquet as pq

    # only the wanted rows are kept as the file is scanned (a large manifest is never held whole)
    df = pq.read_table(os.fspath(mf), columns=["id", "height", "width"],
                       filters=[("id", "in", list(map(str, ids)))]).to_pandas().set_index("id")
    try:
        hw = df.loc[list(ids)]
    except KeyError:
        return None
    return np.sqrt(hw["height"].to_numpy(dtype=np.float64) * hw["width"].to_numpy(dtype=np.float64))


def load_embedder(cfg: MonitorConfig, project: ProjectConfig, params: dict[str, Any]) -> tuple[Embedder | None, str, str]:
    """(embed function, extractor id, note) for the domain feature extractor, when one is saved.

    Monitoring does not train the extractor (evaluation does, ~1 min): without one, the image
    statistics alone are compared and the note says so.
    """
    if cfg.embedding_components == 0:
        return None, "", "embeddings off (monitor.embedding_components: 0)"
    from medsynth.components.features import FeaturesConfig, default_dir
    from medsynth.config import load_stage
    from medsynth.training.extractor import load_extractor

    if cfg.extractor:
        root = Path(cfg.extractor) if Path(cfg.extractor).is_absolute() else project.root / cfg.extractor
    else:
        root = default_dir(project, load_stage(FeaturesConfig, "features", params))
    if not (root / "meta.json").is_file():
        return None, "", f"embeddings off: no feature extractor at {root} (run `medsynth features`)"
    ext = load_extractor(root)
    module = ext.feature_module()  # takes [0, 1] images, resizes to its own resolution

    def embed(x: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return module(torch.from_numpy((np.asarray(x, dtype=np.float32) + 1.0) * 0.5)).numpy()

    return embed, ext.backbone, ""


def reference_features(prep: PreparedData, cfg: MonitorConfig, project: ProjectConfig,
                       embedder: Embedder | None = None, extractor_id: str = ""):
    """(features DataFrame, PCA or None) of the reference's train split, cached by content.

    The PCA is fitted here, on the reference, and reused for every batch.
    """
    use_emb = embedder is not None and cfg.embedding_components > 0
    key = hashlib.sha256(json.dumps([prep.data_hash, FEATURE_VERSION, cfg.max_reference, project.seed,
                                     cfg.embedding_components if use_emb else 0, extractor_id if use_emb else ""]
                                    ).encode()).hexdigest()[:20]
    cache = project.state_path() / "monitoring" / "reference" / key
    if (cache / "features.parquet").is_file():
        pca = PCA.from_arrays(dict(np.load(cache / "pca.npz"))) if (cache / "pca.npz").is_file() else None
        return read_parquet(cache / "features.parquet"), pca
    x_u8, _ = prep.split_uint8("train")
    ids = prep.arrays["train_ids"]
    if len(x_u8) > cfg.max_reference:  # seeded subsample bounds time and memory on big references
        keep = np.sort(np.random.default_rng(project.seed).choice(len(x_u8), cfg.max_reference, replace=False))
        x_u8, ids = x_u8[keep], ids[keep]
    x = to_unit(x_u8)
    pca, emb = None, None
    if use_emb:
        emb = embed_in_batches(embedder, x)
        pca = PCA.fit(emb, cfg.embedding_components)
    df = feature_frame(x, sizes=_reference_sizes(prep, ids), embeddings=emb, pca=pca)
    with atomic_dir(cache) as tmp:
        write_parquet(df, tmp / "features.parquet")
        if pca is not None:
            np.savez(tmp / "pca.npz", **pca.to_arrays())
    return df, pca


def _ingest_batch(batch: Path, prep: PreparedData, project: ProjectConfig, work: Path,
                  params: dict[str, Any], modality: str | None):
    """Ingest + validate the batch into ``work``; returns (validated dataset, counts, quarantine rows)."""
    from medsynth.components.ingest import ingest_sources
    from medsynth.components.validate import ValidateConfig, validate_dataset
    from medsynth.config import build, load_stage
    from medsynth.dataset import CanonicalDataset
    from medsynth.readers import SourceConfig

    classes = prep.classes
    modalities = list(prep.meta.get("modalities") or ["XR"] * len(classes))
    mod = modality or modalities[0]
    src = build(SourceConfig, {"path": str(batch.resolve()), "format": "auto", "modality": mod,
                               "classes": classes}, f"batch {batch}")
    ing = ingest_sources([src], batch.parent, work / "ingest", classes=classes, modalities=modalities)
    quarantine = [json.loads(line) for line in (work / "ingest" / "quarantine" / "records.jsonl").read_text().splitlines() if line]
    # A monitor reports how much of a batch is bad instead of refusing it, and a batch's own
    # split keys mean nothing (no train/test leak to guard).
    vcfg = load_stage(ValidateConfig, "validate", params)
    vcfg = dataclasses.replace(vcfg, max_failure_share=1.0, allow_train_test_overlap=True)
    res, dest, _ = validate_dataset(vcfg, work / "ingest", work / "validated")
    quarantine += [json.loads(line) for line in (dest / "quarantine" / "records.jsonl").read_text().splitlines() if line]
    return CanonicalDataset(dest), ing.n_images, res.n_checked - res.n_failed, quarantine


def batch_content_hash(ds) -> str:
    """Content hash of a batch: its images' pixel hashes, order-free (file names/format don't matter)."""
    return hashlib.sha256("\n".join(sorted(ds.manifest["sha256"].astype(str))).encode()).hexdigest()


def _warnings(ds, prep: PreparedData, ref_sizes: np.ndarray | None) -> list[str]:
    """Plain-language notes on a batch that differs in kind, not just in distribution."""
    out = []
    ref_mods = set(prep.meta.get("modalities") or [])
    got = sorted(set(ds.manifest["modality"].astype(str)))
    if ref_mods and not set(got) <= ref_mods:
        out.append(f"batch modality {', '.join(got)} differs from the reference's {', '.join(sorted(ref_mods))}")
    sizes = sorted({f"{h}x{w}" for h, w in zip(ds.manifest["height"], ds.manifest["width"], strict=True)})
    if ref_sizes is not None and len(ref_sizes):
        ref_side = float(np.median(ref_sizes))
        side = float(np.median(np.sqrt(ds.manifest["height"] * ds.manifest["width"])))
        if abs(side - ref_side) > 0.1 * ref_side:
            out.append(f"batch images are {', '.join(sizes[:3])} px; the reference's are about {ref_side:.0f} px")
    return out


def run(cfg: MonitorConfig, project: ProjectConfig, batch: str | Path, params: dict[str, Any],
        out_dir: str | Path | None = None, reference: str | Path | None = None, modality: str | None = None,
        embedder: Embedder | None = None, extractor_id: str = "", model: str | None = None,
        track: bool = True, auto_embed: bool = True) -> CheckResult:
    """Check one batch of real images against the reference (see the module docstring).

    ``embedder`` maps images to domain embeddings; by default (``auto_embed``) the saved domain
    feature extractor is used when there is one.

    Raises:
        InputError: missing reference, unreadable/empty batch, too few usable images, too many images.
    """
    history = history_of(project)
    batch = Path(batch).expanduser().resolve()  # the history and a retraining need a stable path
    try:
        note = ""
        if embedder is None and auto_embed:
            embedder, extractor_id, note = load_embedder(cfg, project, params)
        return _run(cfg, project, batch, params, out_dir, reference, modality, embedder, extractor_id,
                    model, track, history, note)
    except Exception as exc:
        history.append("error", stage="check", batch=str(batch), error=f"{type(exc).__name__}: {exc}"[:500])
        raise


def _run(cfg, project, batch, params, out_dir, reference, modality, embedder, extractor_id, model, track,
         history, note="") -> CheckResult:
    t0 = time.perf_counter()
    prep = load_reference(reference_path(cfg, project, reference))  # 1.
    if not batch.exists():
        raise InputError(f"{batch}: no such batch file or folder")
    checks_dir = project.artifacts_path() / "monitor"
    work = checks_dir / f".work-{time.strftime('%Y%m%d-%H%M%S')}-{hashlib.sha256(str(batch).encode()).hexdigest()[:6]}"
    try:
        ds, n_images, n_valid, quarantine = _ingest_batch(batch, prep, project, work, params, modality)  # 2-3.
        if n_valid > cfg.max_batch_images:
            raise InputError(f"{batch}: {n_valid} images is more than monitor.max_batch_images "
                             f"({cfg.max_batch_images}); split the batch")
        batch_hash = batch_content_hash(ds)
        from medsynth.components.preprocess import transform_all

        x = to_unit(transform_all(ds, _transform_of(prep)))  # 4.
        ref_df, pca = reference_features(prep, cfg, project, embedder, extractor_id)  # 5.
        sizes = np.sqrt(ds.manifest["height"].to_numpy(np.float64) * ds.manifest["width"].to_numpy(np.float64))
        emb = embed_in_batches(embedder, x) if pca is not None and embedder is not None else None
        cur_df = feature_frame(x, sizes=sizes if "size" in ref_df.columns else None, embeddings=emb, pca=pca)
        warnings = _warnings(ds, prep, ref_df["size"].to_numpy() if "size" in ref_df.columns else None)
        check_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{batch_hash[:12]}"
        out = Path(out_dir) if out_dir else checks_dir / check_id
        out.mkdir(parents=True, exist_ok=True)
        result = compare(ref_df, cur_df, cfg, out)
        if emb is None and embedder is not None:
            emb = embed_in_batches(embedder, x)
        bank, threshold = domain_envelope(prep, cfg, project, embedder, extractor_id) if emb is not None else (None, None)
        domain = check_domain(cfg.domain, result.share_drifted, bank, threshold, emb)  # 5b. in-domain?
        with atomic_path(out / "features.parquet") as tmp_pq:
            write_parquet(cur_df, tmp_pq)
        with open(out / "quarantine.jsonl", "w") as f:
            f.writelines(json.dumps(q) + "\n" for q in quarantine)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    seconds = time.perf_counter() - t0
    summary = {
        "batch": str(batch), "batch_hash": batch_hash, "reference": str(prep.root),
        "reference_hash": prep.data_hash, "model": model, "n_images": n_images, "n_valid": n_valid,
        "n_quarantined": len(quarantine), "warnings": warnings, "seconds": seconds,
        "columns": list(cur_df.columns), "extractor": extractor_id or None, "notes": [note] if note else [],
        "drift": result.to_dict(), "config": to_dict(cfg.drift), "domain": domain.to_dict(),
    }
    write_json(out / "summary.json", summary)
    res = CheckResult(out, batch_hash, result, n_images, n_valid, len(quarantine), warnings, seconds, domain=domain)
    if track:  # 6.
        res.run_id = log_check(cfg, project, "monitor", summary, result, out, batch_hash)
    history.append("check", batch=str(batch), batch_hash=batch_hash, n_images=n_images, n_valid=n_valid,
                   n_quarantined=len(quarantine), drifted=result.drifted, share_drifted=result.share_drifted,
                   drifted_columns=result.drifted_columns, reasons=result.reasons, warnings=warnings,
                   reference_hash=prep.data_hash, model=model,
                   report=str(out / "report.html") if cfg.html_report else None,
                   summary=str(out / "summary.json"), run_id=res.run_id,
                   drift_share_threshold=cfg.drift.drift_share, domain=domain.verdict,
                   domain_reason=domain.reason, domain_outlier_share=domain.outlier_share)
    return res


def domain_envelope(prep: PreparedData, cfg: MonitorConfig, project: ProjectConfig, embedder: Embedder,
                    extractor_id: str) -> tuple[np.ndarray, float]:
    """The reference's domain-embedding envelope (``monitoring.domain.envelope``), cached by content."""
    key = hashlib.sha256(json.dumps([prep.data_hash, extractor_id, to_dict(cfg.domain), project.seed]).encode()
                         ).hexdigest()[:20]
    cache = project.state_path() / "monitoring" / "domain" / f"{key}.npz"
    if cache.is_file():
        with np.load(cache) as z:
            return z["bank"], float(z["threshold"])
    x_u8, _ = prep.split_uint8("train")
    keep = np.random.default_rng(project.seed).permutation(len(x_u8))[: cfg.domain.max_reference]
    bank, threshold = envelope(embed_in_batches(embedder, to_unit(x_u8[np.sort(keep)])), cfg.domain, project.seed)
    with atomic_path(cache) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, bank=bank, threshold=np.float64(threshold))
    return bank, threshold


def compare(ref_df, cur_df, cfg: MonitorConfig, out: Path) -> DriftResult:
    """Evidently drift, with its HTML report written atomically to ``out/report.html`` when enabled."""
    if not cfg.html_report:
        return detect_drift(ref_df, cur_df, cfg.drift, report=False)
    with atomic_path(out / "report.html") as tmp_html:
        return detect_drift(ref_df, cur_df, cfg.drift, html_path=tmp_html)


def log_check(cfg: MonitorConfig, project: ProjectConfig, step: str, summary: dict[str, Any],
                result: DriftResult, out: Path, data_hash: str) -> str:
    import mlflow

    from medsynth.tracking import setup_mlflow, step_run

    # step_run creates the experiment but starts the run in the active one: select it first.
    mlflow.set_experiment(experiment_id=setup_mlflow(project, cfg.experiment))
    with step_run(project, step, to_dict(cfg), data_hash, experiment=cfg.experiment,
                  tags={"medsynth.batch": str(summary.get("batch", ""))[:250],
                        "medsynth.drifted": str(result.drifted).lower()}) as run:
        metrics = {"drifted": float(result.drifted), "share_drifted": result.share_drifted,
                   "n_drifted": result.n_drifted, "seconds": summary["seconds"]}
        metrics |= {k: float(summary[k]) for k in ("n_images", "n_valid", "n_quarantined") if k in summary}
        metrics |= {f"p_value.{c}": p for c, p in result.p_values.items()}
        mlflow.log_metrics(metrics)
        mlflow.log_artifact(str(out / "summary.json"))
        if (out / "report.html").is_file():
            mlflow.log_artifact(str(out / "report.html"))
        return run.info.run_id
