"""Per-image features the drift monitor compares: intensity statistics and reduced embeddings.

Every feature is computed on images that went through the one evaluation transform chain
(``medsynth.transforms.ImageTransform``), so reference and current batches are measured on the
same pixels. Images arrive as float32 ``[N, 1, R, R]`` in [-1, 1] and are mapped to [0, 1].

Columns (one row per image):

- ``mean``, ``std``, ``p05``, ``p50``, ``p95``: intensity level and spread (exposure, gamma).
- ``contrast``: Michelson contrast over robust extremes, (p95 - p05) / (p95 + p05).
- ``sharpness``: variance of the Laplacian (blur and lower resolution lower it).
- ``noise``: Immerkaer's fast noise sigma (a Laplacian-difference mask that cancels smooth
  structure, so it follows sensor noise more than anatomy).
- ``entropy``: Shannon entropy of the 64-bin intensity histogram, in bits.
- ``size``: the source image's side, sqrt(height x width), before resizing (when known).
- ``emb_0..emb_{k-1}``: the domain classifier's penultimate-layer embedding projected on the
  first k principal components of the reference, so Evidently's per-column tests see a few
  informative, decorrelated columns instead of hundreds of near-constant ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

STAT_COLUMNS = ["mean", "std", "p05", "p50", "p95", "contrast", "sharpness", "noise", "entropy"]
SIZE_COLUMN = "size"
EMB_PREFIX = "emb_"
HIST_BINS = 64

Embedder = Callable[[np.ndarray], np.ndarray]  # [N, 1, R, R] in [-1, 1] -> [N, D]


def _as_unit(images: np.ndarray) -> np.ndarray:
    """[N, 1, R, R] or [N, R, R] in [-1, 1] -> float32 [N, R, R] in [0, 1]."""
    x = np.asarray(images, dtype=np.float32)
    if x.ndim == 4:
        if x.shape[1] != 1:
            raise ValueError(f"expected single-channel images [N, 1, R, R], got {x.shape}")
        x = x[:, 0]
    if x.ndim != 3:
        raise ValueError(f"expected images [N, 1, R, R], got shape {x.shape}")
    return np.clip((x + 1.0) * 0.5, 0.0, 1.0)


def image_statistics(images: np.ndarray, chunk: int = 2048) -> dict[str, np.ndarray]:
    """The intensity/texture columns of ``images`` ([N, 1, R, R] in [-1, 1]), vectorised in chunks."""
    x_all = _as_unit(images)
    n = x_all.shape[0]
    out = {c: np.empty(n, dtype=np.float64) for c in STAT_COLUMNS}
    for s in range(0, n, chunk):
        x = x_all[s : s + chunk]  # float32: half the memory traffic of float64, ample precision
        m, h, w = x.shape
        flat = x.reshape(m, -1)
        srt = np.sort(flat, axis=1)  # one sort gives all percentiles (nearest rank)
        p05, p50, p95 = (srt[:, round(q * (srt.shape[1] - 1))].astype(np.float64) for q in (0.05, 0.5, 0.95))
        # 4-neighbour Laplacian on the interior: (H-2) x (W-2) per image
        lap = (x[:, :-2, 1:-1] + x[:, 2:, 1:-1] + x[:, 1:-1, :-2] + x[:, 1:-1, 2:]
               - 4.0 * x[:, 1:-1, 1:-1])
        # Immerkaer (1996): kernel [[1,-2,1],[-2,4,-2],[1,-2,1]] = difference of two Laplacians
        k = (x[:, :-2, :-2] + x[:, :-2, 2:] + x[:, 2:, :-2] + x[:, 2:, 2:]
             - 2.0 * (x[:, :-2, 1:-1] + x[:, 2:, 1:-1] + x[:, 1:-1, :-2] + x[:, 1:-1, 2:])
             + 4.0 * x[:, 1:-1, 1:-1])
        noise = np.sqrt(np.pi / 2.0) * np.abs(k).sum(axis=(1, 2), dtype=np.float64) / (6.0 * (h - 2) * (w - 2))
        bins = np.minimum((flat * HIST_BINS).astype(np.int64), HIST_BINS - 1)
        counts = np.bincount((bins + HIST_BINS * np.arange(m)[:, None]).ravel(),
                             minlength=m * HIST_BINS).reshape(m, HIST_BINS)
        p = counts / flat.shape[1]
        with np.errstate(divide="ignore", invalid="ignore"):
            ent = -np.where(p > 0, p * np.log2(p), 0.0).sum(axis=1)
        sl = slice(s, s + m)
        out["mean"][sl] = flat.mean(axis=1, dtype=np.float64)
        out["std"][sl] = flat.std(axis=1, dtype=np.float64)
        out["p05"][sl], out["p50"][sl], out["p95"][sl] = p05, p50, p95
        out["contrast"][sl] = (p95 - p05) / np.maximum(p95 + p05, 1e-6)
        out["sharpness"][sl] = lap.reshape(m, -1).var(axis=1, dtype=np.float64)
        out["noise"][sl] = noise
        out["entropy"][sl] = ent
    return out


@dataclass(frozen=True)
class PCA:
    """A PCA fitted on the reference embeddings (numpy SVD), applied unchanged to every batch."""

    mean: np.ndarray  # [D]
    components: np.ndarray  # [k, D]
    explained: np.ndarray  # [k] share of variance per component

    @classmethod
    def fit(cls, emb: np.ndarray, k: int) -> PCA:
        e = np.asarray(emb, dtype=np.float64)
        if e.ndim != 2 or e.shape[0] < 2:
            raise ValueError(f"PCA needs at least 2 embeddings [N, D], got {e.shape}")
        k = max(1, min(k, e.shape[0] - 1, e.shape[1]))
        mu = e.mean(axis=0)
        _, s, vt = np.linalg.svd(e - mu, full_matrices=False)
        var = s**2
        # A sign convention makes the fit reproducible (SVD signs are arbitrary).
        signs = np.sign(vt[:k, np.argmax(np.abs(vt[:k]), axis=1)].diagonal())
        signs[signs == 0] = 1.0
        return cls(mu, vt[:k] * signs[:, None], var[:k] / max(var.sum(), 1e-12))

    def transform(self, emb: np.ndarray) -> np.ndarray:
        return (np.asarray(emb, dtype=np.float64) - self.mean) @ self.components.T

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"pca_mean": self.mean, "pca_components": self.components, "pca_explained": self.explained}

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> PCA:
        return cls(a["pca_mean"], a["pca_components"], a["pca_explained"])


def feature_frame(
    images: np.ndarray,
    sizes: np.ndarray | None = None,
    embeddings: np.ndarray | None = None,
    pca: PCA | None = None,
):
    """One row of features per image (a pandas DataFrame).

    Args:
        images: float32 [N, 1, R, R] in [-1, 1] after the evaluation transforms.
        sizes: the source side length of each image (before resizing); omitted when None.
        embeddings: [N, D] domain-classifier embeddings; projected with ``pca`` (required with it).
    """
    import pandas as pd

    cols = image_statistics(images)
    df = pd.DataFrame(cols)
    if sizes is not None:
        df[SIZE_COLUMN] = np.asarray(sizes, dtype=np.float64)
    if embeddings is not None:
        if pca is None:
            raise ValueError("embeddings given without the reference PCA")
        z = pca.transform(embeddings)
        for j in range(z.shape[1]):
            df[f"{EMB_PREFIX}{j}"] = z[:, j]
    return df


def embed_in_batches(embed: Embedder, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """Run ``embed`` over ``images`` in bounded batches (keeps memory flat on large batches)."""
    parts = [np.asarray(embed(images[i : i + batch]), dtype=np.float32) for i in range(0, len(images), batch)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)
