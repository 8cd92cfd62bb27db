"""Is a new batch the champion's kind of image at all? The in-domain check that gates retraining.

Drift says a batch *differs*; it does not say whether the difference is an acquisition change of the
same anatomy (a new scanner, a blur, a gamma: data a retraining should learn) or another domain
(hand X-rays arriving at a chest X-ray model, CT slices: data a retraining must never learn).

1. With the domain feature extractor: the reference's training images are embedded; half of them
   form a bank, the other half gives the bank's own nearest-neighbour distances, whose
   ``quantile`` (0.99) is the envelope. A batch image farther than that from every bank image is
   outside. A batch with more than ``max_outlier_share`` of its images outside is **off-domain**.
   Measured on the bundled data (CXR reference): noise/blur/gamma shifts 0.5-4 % outside, pediatric
   X-rays 97 %, CT and MRI 100 %.
2. Without an extractor there is only drift magnitude: a batch whose share of drifted feature
   columns reaches ``max_share_drifted`` is off-domain; any other batch is **unverified** (a person
   may approve it; a policy may not).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from medsynth.config import params_defaults
from medsynth.errors import ConfigError

IN, OFF, UNVERIFIED = "in", "off", "unverified"


@dataclass(frozen=True)
@params_defaults("monitor.domain")
class DomainConfig:
    """``monitor.domain`` in params.yaml."""

    quantile: float  # envelope: this quantile of the reference's own nearest-neighbour distances
    max_outlier_share: float  # more batch images outside the envelope: off-domain
    max_share_drifted: float | None  # without an extractor: this share of drifted columns is off-domain
    max_reference: int  # reference images embedded for the envelope (seeded sample)

    def check(self) -> None:
        if not 0.5 <= self.quantile < 1.0:
            raise ConfigError("monitor.domain.quantile: must be in [0.5, 1)")
        if not 0.0 < self.max_outlier_share < 1.0:
            raise ConfigError("monitor.domain.max_outlier_share: must be in (0, 1)")
        if self.max_share_drifted is not None and not 0.0 < self.max_share_drifted <= 1.0:
            raise ConfigError("monitor.domain.max_share_drifted: must be in (0, 1] or null")
        if not 20 <= self.max_reference <= 20_000:
            raise ConfigError("monitor.domain.max_reference: must be between 20 and 20000")


@dataclass
class DomainResult:
    """The verdict (``in`` / ``off`` / ``unverified``) and why."""

    verdict: str
    reason: str
    outlier_share: float | None = None
    threshold: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def nearest_distances(query: np.ndarray, bank: np.ndarray, chunk: int = 512) -> np.ndarray:
    """Euclidean distance of each query row to its nearest bank row."""
    bank = np.asarray(bank, np.float64)
    b2 = (bank**2).sum(1)
    out = []
    for i in range(0, len(query), chunk):
        q = np.asarray(query[i : i + chunk], np.float64)
        d2 = (q**2).sum(1)[:, None] + b2[None, :] - 2.0 * q @ bank.T
        out.append(np.sqrt(np.maximum(d2.min(1), 0.0)))
    return np.concatenate(out) if out else np.zeros(0)


def envelope(reference_emb: np.ndarray, cfg: DomainConfig, seed: int = 0) -> tuple[np.ndarray, float]:
    """(bank, threshold) from the reference's embeddings: half is the bank, the other half measures it."""
    emb = np.asarray(reference_emb, np.float32)
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(emb))[: cfg.max_reference]
    if len(idx) < 20:
        raise ConfigError(f"in-domain check: the reference has {len(idx)} images, at least 20 are needed")
    half = len(idx) // 2
    bank, probe = emb[idx[:half]], emb[idx[half:]]
    return bank, float(np.quantile(nearest_distances(probe, bank), cfg.quantile))


def check_domain(cfg: DomainConfig, share_drifted: float, bank: np.ndarray | None = None,
                 threshold: float | None = None, batch_emb: np.ndarray | None = None) -> DomainResult:
    """The verdict for one batch (embeddings when an extractor exists, else drift magnitude)."""
    if bank is not None and threshold is not None and batch_emb is not None and len(batch_emb):
        share = float((nearest_distances(batch_emb, bank) > threshold).mean())
        off = share > cfg.max_outlier_share
        why = (f"{share:.0%} of its images lie outside the reference's domain-embedding envelope "
               f"(limit {cfg.max_outlier_share:.0%})")
        return DomainResult(OFF if off else IN, why, share, threshold)
    if cfg.max_share_drifted is not None and share_drifted >= cfg.max_share_drifted:
        return DomainResult(OFF, f"{share_drifted:.0%} of the feature columns drifted (limit "
                                 f"{cfg.max_share_drifted:.0%}; no domain feature extractor for a finer check)")
    return DomainResult(UNVERIFIED, "no domain feature extractor (run `medsynth features`): not verified "
                                    "in-domain; only a person's approval can make it eligible")
