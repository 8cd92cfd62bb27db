"""Drift between a reference and a current feature table, measured with Evidently.

Evidently's ``DataDriftPreset`` runs one two-sample test per column (Kolmogorov-Smirnov by
default: its p-value is calibrated at any batch size, unlike distance scores whose chance level
grows as batches shrink). The batch is flagged when

1. the share of drifted columns (p < ``p_threshold``) reaches ``drift_share`` -- a broad shift
   (exposure, tone curve, another population), or
2. any single column has p < ``strong_p`` -- a severe narrow shift (blur or resolution moves
   only the texture columns, a different image size only ``size``).

Evidently is imported inside :func:`detect_drift` (it takes seconds to import).
"""

from __future__ import annotations

import enum
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medsynth.config import params_defaults
from medsynth.errors import ConfigError, InputError


class StatTest(enum.StrEnum):
    KS = "ks"  # Kolmogorov-Smirnov, p-value
    MANNW = "mannw"  # Mann-Whitney U, p-value
    ANDERSON = "anderson"  # Anderson-Darling k-sample, p-value
    CRAMER_VON_MISES = "cramer_von_mises"  # p-value


@dataclass(frozen=True)
@params_defaults("monitor.drift")
class DriftConfig:
    """``monitor.drift`` in params.yaml."""

    stattest: StatTest
    p_threshold: float  # a column drifted when its p-value is below this
    drift_share: float  # batch drifted when this share of columns drifted ...
    strong_p: float  # ... or when any one column's p-value is below this
    min_batch: int  # fewer images than this: the tests have too little power to judge

    def check(self) -> None:
        if not 0.0 < self.p_threshold < 1.0:
            raise ConfigError("monitor.drift.p_threshold: must be in (0, 1)")
        if not 0.0 < self.drift_share <= 1.0:
            raise ConfigError("monitor.drift.drift_share: must be in (0, 1]")
        if not 0.0 <= self.strong_p < self.p_threshold:
            raise ConfigError("monitor.drift.strong_p: must be in [0, p_threshold)")
        if self.min_batch < 2:
            raise ConfigError("monitor.drift.min_batch: must be at least 2")


@dataclass
class DriftResult:
    """What one comparison found. ``p_values`` maps each column to its test's p-value."""

    drifted: bool
    share_drifted: float
    n_drifted: int
    n_columns: int
    p_values: dict[str, float]
    drifted_columns: list[str]
    strong_columns: list[str]
    n_reference: int
    n_current: int
    stattest: str
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary_line(self) -> str:
        flag = "DRIFT" if self.drifted else "no drift"
        cols = ", ".join(self.drifted_columns) or "none"
        return (f"{flag}: {self.n_drifted}/{self.n_columns} columns drifted "
                f"({self.share_drifted:.0%}; {cols}) on {self.n_current} images vs {self.n_reference}")


def detect_drift(reference, current, cfg: DriftConfig, html_path: str | Path | None = None,
                 report: bool = True) -> DriftResult:
    """Compare two feature tables (pandas DataFrames with the same numeric columns).

    Args:
        reference: the champion's training data features.
        current: the new batch's features.
        cfg: thresholds (``monitor.drift``).
        html_path: where to save Evidently's self-contained HTML report (needs ``report``).
        report: build Evidently's full ``Report`` with ``DataDriftPreset`` (what the monitor saves).
            False runs the same Evidently stattests per column without the report's plotly
            widgets (~10x faster; for sweeps such as the false-alarm benchmark). The p-values
            are identical.

    Raises:
        InputError: no common columns, or a table too small to test.
    """
    columns = [c for c in reference.columns if c in current.columns]
    if not columns:
        raise InputError("drift: reference and current batch share no feature columns")
    if len(current) < cfg.min_batch:
        raise InputError(f"drift: the batch has {len(current)} usable images; at least "
                         f"{cfg.min_batch} are needed for a meaningful test (monitor.drift.min_batch)")
    if len(reference) < cfg.min_batch:
        raise InputError(f"drift: the reference has only {len(reference)} images")
    ref_df = reference[columns].astype("float64")
    cur_df = current[columns].astype("float64")
    with warnings.catch_warnings():
        # Constant columns (e.g. every source image 64 px) make numpy warn inside Evidently's
        # correlation widgets; the tests themselves handle them (identical samples: p = 1).
        warnings.simplefilter("ignore")
        if report:
            p_values = _report_p_values(ref_df, cur_df, columns, cfg, html_path)
        else:
            p_values = _stattest_p_values(ref_df, cur_df, columns, cfg)
    return decide(p_values, cfg, len(reference), len(current))


def _report_p_values(ref_df, cur_df, columns: list[str], cfg: DriftConfig,
                     html_path: str | Path | None) -> dict[str, float]:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=columns)
    ref = Dataset.from_pandas(ref_df, data_definition=definition)
    cur = Dataset.from_pandas(cur_df, data_definition=definition)
    preset = DataDriftPreset(columns=columns, method=cfg.stattest.value,
                             threshold=cfg.p_threshold, drift_share=cfg.drift_share)
    snapshot = Report([preset]).run(reference_data=ref, current_data=cur)
    if html_path is not None:
        Path(html_path).parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(html_path))
    p_values: dict[str, float] = {}
    for m in snapshot.dict()["metrics"]:
        cfg_m = m.get("config", {})
        if cfg_m.get("type", "").endswith("ValueDrift"):
            p_values[cfg_m["column"]] = _finite(m["value"])
    return p_values


def _stattest_p_values(ref_df, cur_df, columns: list[str], cfg: DriftConfig) -> dict[str, float]:
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    out: dict[str, float] = {}
    for c in columns:
        test = get_stattest(ref_df[c], cur_df[c], ColumnType.Numerical, cfg.stattest.value)
        out[c] = _finite(test(ref_df[c], cur_df[c], ColumnType.Numerical, cfg.p_threshold).drift_score)
    return out


def _finite(v: Any) -> float:
    """A p-value as float; a missing/NaN one (degenerate column) counts as no evidence (1.0)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return 1.0
    return f if math.isfinite(f) else 1.0


def decide(p_values: dict[str, float], cfg: DriftConfig, n_reference: int, n_current: int) -> DriftResult:
    """Apply the two flag rules to per-column p-values (pure; also used by tests and the policy)."""
    drifted_cols = sorted(c for c, p in p_values.items() if p < cfg.p_threshold)
    strong = sorted(c for c, p in p_values.items() if p < cfg.strong_p)
    n = len(p_values)
    share = len(drifted_cols) / n if n else 0.0
    reasons = []
    if n and share >= cfg.drift_share:
        reasons.append(f"{len(drifted_cols)}/{n} columns drifted (p < {cfg.p_threshold:g}), "
                       f"share {share:.2f} >= {cfg.drift_share:g}")
    if strong:
        reasons.append(f"strong shift in {', '.join(strong)} (p < {cfg.strong_p:g})")
    return DriftResult(
        drifted=bool(reasons), share_drifted=share, n_drifted=len(drifted_cols), n_columns=n,
        p_values=p_values, drifted_columns=drifted_cols, strong_columns=strong,
        n_reference=n_reference, n_current=n_current, stattest=cfg.stattest.value, reasons=reasons,
    )
