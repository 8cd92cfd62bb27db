"""Monitor the champion's own outputs: a generated batch against its evaluation-time batch.

Real data can stay the same while the model breaks silently (weights corrupted or swapped, a
changed transform, a serving bug). The first check of a model stores the features of its images at
seed 0 as that model's reference (run it right after evaluation/promotion); every later check
generates a fresh batch (a new seed each time) and runs the same Evidently drift test against it.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import numpy as np

from medsynth.components.monitor import (
    FEATURE_VERSION,
    CheckResult,
    MonitorConfig,
    compare,
    history_of,
    log_check,
)
from medsynth.config import to_dict
from medsynth.errors import InputError
from medsynth.fileio import atomic_path, read_parquet, write_json, write_parquet
from medsynth.monitoring.image_features import feature_frame
from medsynth.project import ProjectConfig


def run_outputs(cfg: MonitorConfig, project: ProjectConfig, generator: Any, model: str,
                out_dir: str | Path | None = None, seed: int | None = None, track: bool = True) -> CheckResult:
    """Check the champion's outputs against its own evaluation-time outputs.

    The first check of ``model`` stores the features of its images at seed 0 as the reference
    (call it right after evaluation/promotion); every later check generates a fresh batch (a new
    seed each time) and compares. A silently broken model (bad weights, a changed transform, a
    serving bug) moves its outputs away from that reference.
    """
    history = history_of(project)
    try:
        return _run_outputs(cfg, project, generator, model, out_dir, seed, track, history)
    except Exception as exc:
        history.append("error", stage="output_check", model=model, error=f"{type(exc).__name__}: {exc}"[:500])
        raise


def _run_outputs(cfg, project, generator, model, out_dir, seed, track, history) -> CheckResult:
    t0 = time.perf_counter()
    key = hashlib.sha256(f"{model}:{FEATURE_VERSION}".encode()).hexdigest()[:16]
    ref_file = project.state_path() / "monitoring" / "outputs" / key / "reference.parquet"
    n = cfg.output_images
    if not ref_file.is_file():
        ref_df = feature_frame(_generate(generator, n, 0))
        with atomic_path(ref_file) as tmp:
            write_parquet(ref_df, tmp)
    ref_df = read_parquet(ref_file)
    previous = [e for e in history.events("output_check") if e.get("model") == model]
    s = seed if seed is not None else len(previous) + 1
    cur_df = feature_frame(_generate(generator, n, s))
    out = Path(out_dir) if out_dir else project.artifacts_path() / "monitor" / f"{time.strftime('%Y%m%d-%H%M%S')}-outputs-{key[:8]}"
    out.mkdir(parents=True, exist_ok=True)
    result = compare(ref_df, cur_df, cfg, out)
    summary = {"model": model, "seed": s, "n_images": n, "reference": str(ref_file), "seconds": time.perf_counter() - t0,
               "drift": result.to_dict(), "config": to_dict(cfg.drift)}
    write_json(out / "summary.json", summary)
    res = CheckResult(out, f"{key}:{s}", result, n, n, 0, [], summary["seconds"])
    if track:
        res.run_id = log_check(cfg, project, "monitor-outputs", summary, result, out, key)
    history.append("output_check", model=model, seed=s, n_valid=n, drifted=result.drifted,
                   share_drifted=result.share_drifted, drifted_columns=result.drifted_columns,
                   reasons=result.reasons, report=str(out / "report.html") if cfg.html_report else None,
                   run_id=res.run_id,
                   drift_share_threshold=cfg.drift.drift_share)
    return res


def _generate(generator: Any, n: int, seed: int) -> np.ndarray:
    x = np.asarray(generator.generate(n, seed), dtype=np.float32)
    if x.ndim != 4 or x.shape[0] != n or x.shape[1] != 1:
        raise InputError(f"generator returned shape {x.shape}; expected [{n}, 1, R, R]")
    if not np.isfinite(x).all():
        raise InputError("generator returned non-finite values (NaN/inf): the model is broken")
    return x
