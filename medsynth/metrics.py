"""Shared image-set metrics: FID-/KID-domain, PRDC, SSIM/PSNR to nearest neighbour, diversity, privacy.

All functions take image arrays float32 ``[N, 1, R, R]`` in [-1, 1] (the project's convention) or
feature arrays ``[N, D]``; none does I/O or tracking. Used by ``medsynth evaluate`` and the monitor.

* **Feature space.** :class:`DomainFeatures` wraps any trunk (e.g. the domain classifier's
  penultimate layer) as the ``feature=`` module torchmetrics' ``FrechetInceptionDistance`` /
  ``KernelInceptionDistance`` accept: it has ``num_features`` (so torchmetrics does not probe it
  with a 3x299x299 dummy) and takes images in [0, 1] -- with a custom module torchmetrics passes
  images through unchanged when ``normalize=True``, so the [0, 1] -> [-1, 1] step lives here.
  Scores made with it are "FID-domain"/"KID-domain", never comparable to ImageNet-Inception FID.
* **One extraction per image set.** :func:`fid_kid` runs torchmetrics' FID and KID on features
  extracted once (through an identity ``feature=`` module), so FID, KID, PRDC, per-class FID and
  the real-vs-real floor share the same numbers; :func:`fid_kid_images` is the direct
  ``feature=DomainFeatures`` path (the two agree; a unit test checks it).
* **Distances in pixel space** are root-mean-square differences on the [0, 1] intensity scale
  (so ``PSNR = -20 log10(rms)``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from medsynth.imaging import from_01, resize_tensor, tensor_01, to_01, uint8_tensor_from_01

PSNR_CAP_DB = 100.0  # identical images have infinite PSNR; capped so means stay finite


def resize_policy(resolution: int) -> str:
    """The sentence recorded next to every feature-space score."""
    return (f"grayscale, bilinear resize to {resolution} px (antialiased when shrinking, "
            f"upsampled when smaller), intensities [0,1] -> [-1,1]")


class DomainFeatures(nn.Module):
    """torchmetrics ``feature=`` module: images ``[N, C, H, W]`` in [0, 1] -> ``[N, num_features]``."""

    def __init__(self, trunk: nn.Module, num_features: int, resolution: int) -> None:
        super().__init__()
        self.trunk = trunk.eval()
        self.num_features = int(num_features)
        self.resolution = int(resolution)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if x.shape[1] != 1:  # RGB input: luminance-agnostic mean
            x = x.mean(1, keepdim=True)
        r = self.resolution
        if x.shape[-2:] != (r, r):
            x = resize_tensor(x, r, 0.0, 1.0)
        self.trunk.eval()
        return self.trunk(from_01(x))


class _Precomputed(nn.Module):
    """Identity ``feature=`` module: lets torchmetrics consume features extracted once."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@torch.no_grad()
def extract(module: nn.Module, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Features ``[N, D]`` of images ``[N, 1, R, R]`` in [-1, 1] through a ``feature=`` module."""
    out = []
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size], dtype=np.float32))
        out.append(module(to_01(x)).double())
    return torch.cat(out).numpy() if out else np.zeros((0, int(module.num_features)))


def kid_subset_size(n_real: int, n_fake: int, wanted: int) -> int:
    """KID subset size bounded by both set sizes (torchmetrics errors when it is larger)."""
    return max(2, min(wanted, n_real, n_fake))


def fid_kid(real_feats: np.ndarray, fake_feats: np.ndarray, kid_subset: int = 1000,
            kid_subsets: int = 50, seed: int = 0) -> dict[str, float]:
    """FID and KID (mean, std) of two feature sets with torchmetrics.

    Raises:
        ValueError: fewer than two samples in a set or mismatched feature sizes.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    if real_feats.ndim != 2 or fake_feats.ndim != 2 or real_feats.shape[1] != fake_feats.shape[1]:
        raise ValueError(f"feature sets must be [N, D] with the same D, got {real_feats.shape}, {fake_feats.shape}")
    if len(real_feats) < 2 or len(fake_feats) < 2:
        raise ValueError("FID/KID need at least two samples in each set")
    d = real_feats.shape[1]
    ident = _Precomputed(d)
    fid = FrechetInceptionDistance(feature=ident, normalize=True)
    size = kid_subset_size(len(real_feats), len(fake_feats), kid_subset)
    r, f = torch.from_numpy(real_feats).double(), torch.from_numpy(fake_feats).double()
    with warnings.catch_warnings():  # KID warns that it buffers features: they are small here
        warnings.simplefilter("ignore", UserWarning)
        kid = KernelInceptionDistance(feature=ident, subset_size=size, subsets=kid_subsets, normalize=True)
    for m in (fid, kid):
        m.update(r, real=True)
        m.update(f, real=False)
    torch.manual_seed(seed)  # KID draws random subsets
    kid_mean, kid_std = kid.compute()
    return {"fid": float(fid.compute()), "kid_mean": float(kid_mean), "kid_std": float(kid_std),
            "kid_subset_size": size}


def frechet(real_feats: np.ndarray, fake_feats: np.ndarray) -> float:
    """FID alone (torchmetrics, the same computation as :func:`fid_kid`), for bootstraps and the app."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    if real_feats.ndim != 2 or fake_feats.ndim != 2 or real_feats.shape[1] != fake_feats.shape[1]:
        raise ValueError(f"feature sets must be [N, D] with the same D, got {real_feats.shape}, {fake_feats.shape}")
    if len(real_feats) < 2 or len(fake_feats) < 2:
        raise ValueError("FID needs at least two samples in each set")
    fid = FrechetInceptionDistance(feature=_Precomputed(real_feats.shape[1]), normalize=True)
    fid.update(torch.from_numpy(np.asarray(real_feats, np.float64)), real=True)
    fid.update(torch.from_numpy(np.asarray(fake_feats, np.float64)), real=False)
    return float(fid.compute())


def bootstrap_fid(real_feats: np.ndarray, fake_feats: np.ndarray, floor_feats: np.ndarray | None,
                  draws: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Paired bootstrap of FID (and its real floor and their ratio): each draw resamples every set.

    The same resample of the real reference serves both FIDs of a draw, so the ratio's interval
    reflects how the comparison, not the reference, varies. Returns arrays of ``draws`` values.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, list[float]] = {"fid": [], "floor": [], "ratio": []}
    for _ in range(draws):
        r = real_feats[rng.integers(0, len(real_feats), len(real_feats))]
        f = frechet(r, fake_feats[rng.integers(0, len(fake_feats), len(fake_feats))])
        out["fid"].append(f)
        if floor_feats is not None:
            fl = frechet(r, floor_feats[rng.integers(0, len(floor_feats), len(floor_feats))])
            out["floor"].append(fl)
            out["ratio"].append(f / max(fl, 1e-9))
    return {k: np.asarray(v) for k, v in out.items() if v}


def fid_kid_images(module: nn.Module, real: np.ndarray, fake: np.ndarray, kid_subset: int = 1000,
                   kid_subsets: int = 50, batch_size: int = 256, seed: int = 0) -> dict[str, float]:
    """FID/KID straight from images with torchmetrics' ``feature=module`` (images in [-1, 1])."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    size = kid_subset_size(len(real), len(fake), kid_subset)
    fid = FrechetInceptionDistance(feature=module, normalize=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        kid = KernelInceptionDistance(feature=module, subset_size=size, subsets=kid_subsets, normalize=True)
    for imgs, is_real in ((real, True), (fake, False)):
        for i in range(0, len(imgs), batch_size):
            x = tensor_01(imgs[i : i + batch_size])
            fid.update(x, real=is_real)
            kid.update(x, real=is_real)
    torch.manual_seed(seed)
    kid_mean, kid_std = kid.compute()
    return {"fid": float(fid.compute()), "kid_mean": float(kid_mean), "kid_std": float(kid_std),
            "kid_subset_size": size}


def _cdist(a: np.ndarray, b: np.ndarray) -> torch.Tensor:
    return torch.cdist(torch.from_numpy(np.asarray(a, np.float64)), torch.from_numpy(np.asarray(b, np.float64)))


def _kth_radius(feats: np.ndarray, k: int) -> torch.Tensor:
    d = _cdist(feats, feats)
    # k+1: the smallest distance is the point itself
    return d.kthvalue(min(k + 1, len(feats)), dim=1).values


def prdc(real_feats: np.ndarray, fake_feats: np.ndarray, k: int = 5) -> dict[str, float]:
    """Precision, recall, density, coverage (Naeem et al. 2020, k-NN balls in feature space).

    Precision: share of fakes inside some real k-NN ball. Recall: share of reals inside some fake
    k-NN ball. Density: mean number of real balls holding a fake, over k. Coverage: share of real
    balls holding at least one fake.
    """
    if len(real_feats) <= k or len(fake_feats) <= k:
        raise ValueError(f"PRDC with k={k} needs more than {k} samples per set")
    r_real = _kth_radius(real_feats, k)  # [R]
    r_fake = _kth_radius(fake_feats, k)  # [F]
    d = _cdist(real_feats, fake_feats)  # [R, F]
    inside_real = d <= r_real[:, None]  # fake j inside real ball i
    return {
        "precision": float(inside_real.any(0).double().mean()),
        "recall": float((d <= r_fake[None, :]).any(1).double().mean()),
        "density": float(inside_real.double().sum(0).mean() / k),
        "coverage": float((d.min(1).values <= r_real).double().mean()),
    }


def _flat01(x: np.ndarray) -> torch.Tensor:
    return tensor_01(x).reshape(len(x), -1)


def nearest_neighbours(query: np.ndarray, ref: np.ndarray, exclude_same_index: bool = False,
                       chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """For each query image, the RMS pixel distance ([0, 1] scale) to its nearest ``ref`` image.

    ``exclude_same_index``: query ``i`` is ``ref[i]`` (a set against itself), so skip that pair.

    Returns:
        (distances float64 [Q], indices int64 [Q]).
    """
    q, r = _flat01(query), _flat01(ref)
    r_sq = (r * r).sum(1)
    dist, index = np.empty(len(q)), np.empty(len(q), dtype=np.int64)
    for s in range(0, len(q), chunk):
        qb = q[s : s + chunk]
        d2 = (qb * qb).sum(1)[:, None] + r_sq[None, :] - 2.0 * qb @ r.T  # [B, R]
        if exclude_same_index:
            rows = torch.arange(len(qb))
            d2[rows, rows + s] = float("inf")
        idx = d2.argmin(1)
        # exact distance for the chosen pair (the expansion above loses precision near zero)
        exact = ((qb - r[idx]) ** 2).mean(1).sqrt()
        dist[s : s + len(qb)] = exact.double().numpy()
        index[s : s + len(qb)] = idx.numpy()
    return dist, index


def ssim_psnr(a: np.ndarray, b: np.ndarray, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Per-pair SSIM and PSNR (dB, capped at 100) of images ``a[i]`` vs ``b[i]`` (both in [-1, 1])."""
    from torchmetrics.functional.image import (
        peak_signal_noise_ratio,
        structural_similarity_index_measure,
    )

    ss, ps = [], []
    for i in range(0, len(a), batch_size):
        x, y = tensor_01(a[i : i + batch_size]), tensor_01(b[i : i + batch_size])
        ss.append(structural_similarity_index_measure(x, y, data_range=1.0, reduction="none"))
        ps.append(peak_signal_noise_ratio(x, y, data_range=1.0, reduction="none", dim=(1, 2, 3)))
    s = torch.cat(ss).double().numpy()
    p = torch.cat(ps).double().clamp(max=PSNR_CAP_DB).nan_to_num(PSNR_CAP_DB).numpy()
    return s, p


def ms_ssim_settings(resolution: int) -> tuple[int, tuple[float, ...]]:
    """Kernel size and betas that fit ``resolution`` (the 5-scale default needs >= 161 px)."""
    betas = (0.0448, 0.2856, 0.3001)  # first three of the standard five, renormalised
    s = sum(betas)
    return (5 if resolution >= 28 else 3), tuple(b / s for b in betas)


def pair_similarity(images: np.ndarray, n_pairs: int = 500, seed: int = 0) -> dict[str, float]:
    """Mean MS-SSIM and SSIM between random distinct pairs of one set (high = little diversity)."""
    from torchmetrics.functional.image import (
        multiscale_structural_similarity_index_measure,
        structural_similarity_index_measure,
    )

    n = len(images)
    if n < 2:
        raise ValueError("diversity needs at least two images")
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, n_pairs)
    j = (i + rng.integers(1, n, n_pairs)) % n  # never the same image
    x, y = tensor_01(images[i]), tensor_01(images[j])
    k, betas = ms_ssim_settings(images.shape[-1])
    ms = multiscale_structural_similarity_index_measure(
        x, y, data_range=1.0, kernel_size=k, betas=betas, normalize="relu", reduction="none")
    ss = structural_similarity_index_measure(x, y, data_range=1.0, reduction="none")
    return {"ms_ssim": float(ms.nan_to_num(0.0).mean()), "ssim": float(ss.mean()), "pairs": int(n_pairs)}


@dataclass
class Privacy:
    """Memorisation check: synthetic-to-training NN distances against training-to-training ones."""

    synth_nn: np.ndarray  # [S] RMS distance of each synthetic image to its nearest training image
    synth_nn_index: np.ndarray  # [S] index of that training image
    train_nn: np.ndarray  # [Q] each (sampled) training image to its nearest *other* training image
    threshold: float  # near-copy when synth_nn < threshold
    near_copy_ratio: float

    @property
    def near_copy_share(self) -> float:
        return float((self.synth_nn < self.threshold).mean())

    @property
    def n_near_copies(self) -> int:
        return int((self.synth_nn < self.threshold).sum())

    def summary(self) -> dict[str, float]:
        p5 = float(np.percentile(self.train_nn, 5))
        med_t = float(np.median(self.train_nn))
        return {
            "near_copy_share": self.near_copy_share,
            "n_near_copies": self.n_near_copies,
            "near_copy_threshold": self.threshold,
            "synth_nn_median": float(np.median(self.synth_nn)),
            "synth_nn_min": float(self.synth_nn.min()),
            "train_nn_median": med_t,
            "train_nn_p5": p5,
            # < 1: synthetic images sit closer to training images than those do to each other
            "nn_median_ratio": float(np.median(self.synth_nn) / max(med_t, 1e-12)),
            # about 0.05 for a generator that does not copy; near 1 for one that does
            "share_below_train_p5": float((self.synth_nn < p5).mean()),
        }

    def closest(self, n: int) -> np.ndarray:
        """Indices of the ``n`` synthetic images closest to a training image (for review)."""
        return np.argsort(self.synth_nn, kind="stable")[:n]


def privacy(synth: np.ndarray, train: np.ndarray, near_copy_ratio: float = 0.2,
            max_train_queries: int = 2000, seed: int = 0,
            progress: Callable[[str], None] | None = None) -> Privacy:
    """Distances of synthetic images to the training set vs the training set's own NN distances.

    A synthetic image is a near-copy when its nearest training image is closer than
    ``near_copy_ratio`` x the median training-to-training nearest-neighbour distance: a relative
    threshold, because "close" differs between, say, CT slices and chest X-rays.
    """
    train_nn = train_self_nn(train, max_train_queries, seed)
    if progress:
        progress("privacy: training-set self distances done")
    return privacy_against(synth, train, train_nn, near_copy_ratio)


def train_self_nn(train: np.ndarray, max_queries: int = 2000, seed: int = 0) -> np.ndarray:
    """Each of up to ``max_queries`` sampled training images to its nearest *other* training image.

    The reference half of :func:`privacy`; the app computes it once per model and reuses it.
    """
    if len(train) < 2:
        raise ValueError("privacy check needs at least two training images")
    rng = np.random.default_rng(seed)
    q = rng.choice(len(train), size=min(max_queries, len(train)), replace=False)
    order = np.concatenate([q, np.setdiff1d(np.arange(len(train)), q)])
    # the sampled queries come first in ``order`` so exclude_same_index skips the image itself
    train_nn, _ = nearest_neighbours(train[order][: len(q)], train[order], exclude_same_index=True)
    return train_nn


def privacy_against(synth: np.ndarray, train: np.ndarray, train_nn: np.ndarray,
                    near_copy_ratio: float = 0.2) -> Privacy:
    """The synthetic half of :func:`privacy`, given the training set's own NN distances."""
    synth_nn, idx = nearest_neighbours(synth, train)
    thr = near_copy_ratio * float(np.median(train_nn))
    return Privacy(synth_nn, idx, train_nn, thr, near_copy_ratio)


class InceptionFeatures(nn.Module):
    """Standard-FID features: torchmetrics' Inception-v3 (FID variant) from a *local* weights file.

    Needs ``torch-fidelity`` (which needs torchvision); neither installs with torch 2.13 CPU here,
    so on these machines this raises a clear error. Where they are installed, pass the
    ``pt_inception-2015-12-05`` weights file; images [0, 1] grayscale become 3-channel uint8.
    """

    num_features = 2048

    def __init__(self, weights: str) -> None:
        super().__init__()
        import os

        from medsynth.errors import ConfigError, InputError

        if not os.path.isfile(weights):
            raise InputError(f"{weights}: Inception weights file not found (evaluate.inception_weights)")
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3

            self.net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                          feature_extractor_weights_path=weights)
        except ModuleNotFoundError as exc:
            raise ConfigError(
                f"{weights}: standard FID needs torch-fidelity (and torchvision), which are not installed "
                f"({exc}); set evaluate.inception_weights to \"\" to report FID-domain only") from None
        except Exception as exc:  # noqa: BLE001 - a wrong file fails inside torch-fidelity
            raise InputError(f"{weights}: not usable Inception-v3 FID weights ({str(exc).splitlines()[0][:200]})") from None

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = uint8_tensor_from_01(x)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        return self.net(x).reshape(len(x), -1)


def standard_fid(weights: str, real: np.ndarray, fake: np.ndarray) -> float:
    """ImageNet-Inception FID (comparable with papers) from a local weights file; see InceptionFeatures."""
    module = InceptionFeatures(weights)
    return fid_kid(extract(module, real, 64), extract(module, fake, 64), kid_subsets=1)["fid"]


def binary_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties averaged; NaN if one class is absent."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    # average ranks over ties
    _, start, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = start + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def accuracy_auc(probs: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(accuracy, AUC): binary AUC of class 1, or macro one-vs-rest AUC for more classes."""
    probs = np.asarray(probs)
    y = np.asarray(y).reshape(-1)
    acc = float((probs.argmax(1) == y).mean()) if len(y) else float("nan")
    k = probs.shape[1]
    if k == 2:
        auc = binary_auc(probs[:, 1], y == 1)
    else:
        aucs = [binary_auc(probs[:, c], y == c) for c in range(k)]
        aucs = [a for a in aucs if not np.isnan(a)]
        auc = float(np.mean(aucs)) if aucs else float("nan")
    return acc, auc
