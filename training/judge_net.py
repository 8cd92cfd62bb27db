"""The quality-aware domain feature extractor behind FID-domain / KID-domain / PRDC (``JudgeNet``).

A class-trained CNN's penultimate layer is invariant to much of what makes an image look wrong
(noise, blur, checkerboard artefacts): the old 7-class extractor called pure noise a head CT with
0.98 confidence. ``JudgeNet`` keeps the class objective (so the space separates anatomy) but its
*embedding* concatenates, per block, what a class head throws away:

* the input's high-pass residual (image minus its 3x3 box mean) enters as a second channel, as
  in steganalysis, so pixel-level texture reaches the first filters undiluted;
* a Laplacian pyramid's band energies per image quadrant (fixed, no weights) describe
  sharpness and fine texture;
* each of the four stride-2 blocks contributes its channel means *and* channel standard
  deviations over space (texture statistics, as in style/Gram features), beside the penultimate
  class embedding;
* every dimension is standardised with the real training set's mean/std (buffers saved with the
  weights) and each block is weighted so it carries the same total variance; no single block
  (e.g. the 128-d class embedding) drowns the others in a Frechet distance;
* exposure is projected out of the compared embedding (nuisance attribute projection, as in speaker verification): the
  directions along which a +-``exposure_gain`` change of every grey level moves real training
  images (at full resolution and in the 32 and 16 px views) are measured once, and the ones that
  hold ``exposure_energy`` of that movement are removed from the embedding. A clinically harmless
  exposure difference then no longer reads as a different distribution on a dataset whose real
  images all share one exposure (MedNIST CT), while noise, blur and periodic artefacts, which
  move the embedding along other directions, still do. The gate's C2ST, which does not use
  this embedding, still sees a systematic exposure error, and so does the in-domain model
  below, which reads the embedding before the projection.

``in_domain_score`` is the squared Mahalanobis distance of an image's embedding to the nearest
class centre (shared covariance, Lee et al. 2018), in units of the score's 99th percentile on
held-out real images: above 1.0 is "not like any real image of any class", so noise cannot
score 0.99 class confidence (see ``medsynth.training.extractor.Extractor.judge``).

Pure ML: no files, no tracking.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# one BatchNorm re-estimation for both nets
from medsynth.training.classifier import _recalibrate_batchnorm

BLOCKS = 4


def high_pass(x: torch.Tensor) -> torch.Tensor:
    """Image minus its 3x3 box mean (edges replicated): the pixel-level residual."""
    return x - F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)


PYRAMID_LEVELS = 4
PYRAMID_DIM = PYRAMID_LEVELS * 4  # levels x 2x2 quadrants


def band_energies(x: torch.Tensor) -> torch.Tensor:
    """Log energy of a Laplacian pyramid's bands (4 levels) in each image quadrant ``[N, 16]``.

    A fixed, parameter-free sharpness/texture signature: blur empties the fine bands, noise and
    checkerboards fill them, in a way a short class-trained fit does not reliably keep.
    """
    out = []
    for _ in range(PYRAMID_LEVELS):
        low = F.avg_pool2d(x, 2)
        band = x - F.interpolate(low, size=x.shape[-2:], mode="nearest")
        out.append(torch.log(F.adaptive_avg_pool2d(band * band, 2).flatten(1) + 1e-6))
        x = low
    return torch.cat(out, 1)


class JudgeNet(nn.Module):
    """Four stride-2 conv blocks (``depth`` convs each, BatchNorm, ReLU), a class head, and a
    standardised multi-layer embedding (see the module docstring). Any resolution >= 16."""

    def __init__(self, num_classes: int, feature_dim: int = 128, width: int = 16, depth: int = 1) -> None:
        super().__init__()
        if num_classes < 1 or feature_dim < 2 or width < 4 or depth not in (1, 2):
            raise ValueError(f"bad JudgeNet sizes: classes={num_classes}, feature_dim={feature_dim}, "
                             f"width={width}, depth={depth}")
        self.num_classes, self.class_dim, self.width, self.depth = num_classes, feature_dim, width, depth
        w = width
        chans = [w, 2 * w, 4 * w, 8 * w]

        def block(cin: int, cout: int) -> nn.Sequential:
            layers: list[nn.Module] = []
            for k in range(depth):  # the first conv halves the size, any further one keeps it
                layers += [nn.Conv2d(cin if k == 0 else cout, cout, 3, stride=2 if k == 0 else 1, padding=1,
                                     bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            return nn.Sequential(*layers)

        self.blocks = nn.ModuleList([block(2, chans[0])] + [block(chans[i], chans[i + 1]) for i in range(3)])
        self.fc = nn.Sequential(nn.Linear(chans[-1], feature_dim), nn.ReLU(inplace=True))
        self.head = nn.Linear(feature_dim, num_classes)
        # embedding layout: [mean_b, std_b for each block] + class embedding
        self.block_dims = [PYRAMID_DIM] + [2 * c for c in chans] + [feature_dim]
        self.feature_dim = sum(self.block_dims)
        self.register_buffer("feat_mean", torch.zeros(self.feature_dim))
        self.register_buffer("feat_scale", torch.ones(self.feature_dim))
        # orthogonal projection removing the exposure directions (identity: none removed)
        self.register_buffer("feat_project", torch.eye(self.feature_dim))
        # in-domain model: class centres and the shared precision matrix of the embedding
        self.register_buffer("centres", torch.zeros(num_classes, self.feature_dim))
        self.register_buffer("precision", torch.eye(self.feature_dim))
        self.register_buffer("ood_scale", torch.ones(()))
        self.trunk = _Embedder(self)  # DomainFeatures/torchmetrics call ``trunk`` (images [-1, 1] -> features)

    def _run(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        h = torch.cat([x, 4.0 * high_pass(x)], 1)
        stats = [band_energies(x)]
        for blk in self.blocks:
            h = blk(h)
            stats += [h.mean((2, 3)), h.flatten(2).std(2)]
        z = self.fc(h.mean((2, 3)))
        return stats + [z], z

    def raw_features(self, x: torch.Tensor) -> torch.Tensor:
        """The unstandardised embedding ``[N, feature_dim]``."""
        parts, _ = self._run(x)
        return torch.cat(parts, 1)

    def in_domain_features(self, x: torch.Tensor) -> torch.Tensor:
        """The standardised, block-weighted embedding ``[N, feature_dim]`` of images in [-1, 1], exposure
        kept: what the in-domain model reads (a blur moves partly along the exposure directions)."""
        return (self.raw_features(x) - self.feat_mean) * self.feat_scale

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding the distribution scores compare (FID/KID/PRDC): exposure projected out."""
        return self.in_domain_features(x) @ self.feat_project

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self._run(x)[1])  # logits [N, num_classes]

    def in_domain_score(self, feats: torch.Tensor) -> torch.Tensor:
        """Min over classes of the squared Mahalanobis distance, / its held-out real 99th percentile."""
        d = feats[:, None, :] - self.centres[None]  # [N, C, D]
        m = torch.einsum("ncd,de,nce->nc", d, self.precision, d)
        return m.min(1).values / self.ood_scale

    def spec(self) -> dict[str, int]:
        return {"num_classes": self.num_classes, "feature_dim": self.class_dim, "width": self.width,
                "depth": self.depth}


class _Embedder(nn.Module):
    """``JudgeNet.features`` as a module of its own (what ``DomainFeatures`` wraps)."""

    def __init__(self, net: JudgeNet) -> None:
        super().__init__()
        object.__setattr__(self, "net", net)  # not a submodule: no cycle in state_dict/modules()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x)


@dataclass(frozen=True)
class JudgeSettings:
    epochs: int = 4
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 5e-4
    feature_dim: int = 128
    width: int = 16
    depth: int = 1  # convs per block
    seed: int = 0
    ood_quantile: float = 0.99  # held-out real images below 1.0 in_domain_score
    shrinkage: float = 0.1  # covariance shrinkage towards its diagonal (D is large for N)
    exposure_gain: float = 0.0  # the exposure change projected out of the embedding (0: none)
    exposure_energy: float = 0.99  # share of its movement the removed directions hold
    exposure_max_rank: int = 64  # at most this many directions removed


# the views the gate compares through (full resolution and its coarse views): the exposure
# directions are measured in each
EXPOSURE_VIEWS = (0, 32, 16)


@dataclass
class JudgeHistory:
    loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    seconds: float = 0.0
    exposure_rank: int = 0  # directions projected out of the embedding
    exposure_residual: float = 1.0  # share of an exposure change's movement left in the embedding


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    # geometry only (flip, +-2 px shift): intensity or noise augmentation would teach the
    # features to ignore exactly the defects they must see
    flip = torch.rand(len(x), generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=gen))
    return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))


def train_judge(x: np.ndarray, y: np.ndarray, num_classes: int, settings: JudgeSettings = JudgeSettings(),
                calib: tuple[np.ndarray, np.ndarray] | None = None,
                on_epoch: Callable[[int, float, float], None] | None = None) -> tuple[JudgeNet, JudgeHistory]:
    """Fit a :class:`JudgeNet`, then its feature standardisation and in-domain model.

    Args:
        x, y: real training images ``[N, 1, R, R]`` in [-1, 1] and class labels.
        calib: held-out real images and labels that set the in-domain threshold (the
            ``ood_quantile`` of their score becomes 1.0); default: the training images.
    """
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64).reshape(-1)
    if x.ndim != 4 or x.shape[1] != 1 or len(x) != len(y) or len(x) < 2:
        raise ValueError(f"expected images [N,1,R,R] and N labels (N >= 2), got {x.shape} and {y.shape}")
    t0 = time.perf_counter()
    s = settings
    hist = JudgeHistory()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.seed)
        gen = torch.Generator().manual_seed(s.seed)
        model = JudgeNet(num_classes, s.feature_dim, s.width, s.depth)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
        steps = s.epochs * int(np.ceil(len(x) / s.batch_size))
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=s.lr, total_steps=steps, pct_start=0.2)
        for epoch in range(s.epochs):
            model.train()
            order = torch.randperm(len(x), generator=gen)
            tot, correct = 0.0, 0
            for i in range(0, len(x), s.batch_size):
                idx = order[i : i + s.batch_size]
                if len(idx) < 2:
                    continue
                xb = _augment(xt[idx], gen)
                logits = model(xb)
                loss = F.cross_entropy(logits, yt[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                tot += float(loss.detach()) * len(idx)
                correct += int((logits.argmax(1) == yt[idx]).sum())
            hist.loss.append(tot / len(x))
            hist.train_acc.append(correct / len(x))
            if on_epoch is not None:
                on_epoch(epoch, hist.loss[-1], hist.train_acc[-1])
        _recalibrate_batchnorm(model, xt, s.batch_size)
    model.eval()
    fit_embedding(model, x, y, s, hist)
    cx, cy = calib if calib is not None else (x, y)
    calibrate_in_domain(model, cx, s.ood_quantile)
    hist.seconds = time.perf_counter() - t0
    return model, hist




@torch.no_grad()
def raw_embed(model: JudgeNet, x: np.ndarray, batch_size: int = 512) -> torch.Tensor:
    model.eval()
    out = [model.raw_features(torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size], dtype=np.float32)))
           for i in range(0, len(x), batch_size)]
    return torch.cat(out).double()


@torch.no_grad()
def fit_exposure_projection(model: JudgeNet, x: np.ndarray, s: JudgeSettings) -> tuple[int, float]:
    """Set ``feat_project`` to remove the embedding directions an exposure change moves real images along.

    The movement of each standardised embedding under a gain of ``1 +- exposure_gain`` is measured
    in every gate view (``EXPOSURE_VIEWS``); its leading right singular vectors, enough to hold
    ``exposure_energy`` of the squared movement (at most ``exposure_max_rank``), are projected out.
    Returns (directions removed, share of the movement left).
    """
    from medsynth.disturb import exposure
    from medsynth.imaging import coarse_view

    dim = model.feature_dim
    model.feat_project.copy_(torch.eye(dim))
    if s.exposure_gain <= 0:
        return 0, 1.0

    def standardised(v: np.ndarray) -> torch.Tensor:  # in_domain_features, batched, in float64
        return (raw_embed(model, v) - model.feat_mean.double()) * model.feat_scale.double()

    moves = []
    for px in EXPOSURE_VIEWS:
        v = x if px == 0 else coarse_view(x, px)
        base = standardised(v)
        moves += [standardised(exposure(v, sign * 100.0 * s.exposure_gain)) - base for sign in (1.0, -1.0)]
    m = torch.cat(moves)
    _, sv, vh = torch.linalg.svd(m, full_matrices=False)
    energy = torch.cumsum(sv**2, 0) / (sv**2).sum().clamp_min(1e-30)
    rank = min(int((energy < s.exposure_energy).sum()) + 1, s.exposure_max_rank, dim - 1)
    basis = vh[:rank].T  # [D, rank], orthonormal columns
    project = torch.eye(dim, dtype=basis.dtype) - basis @ basis.T
    model.feat_project.copy_(project.float())
    left = float(((m @ project) ** 2).sum() / (m**2).sum().clamp_min(1e-30))
    return rank, left


@torch.no_grad()
def fit_embedding(model: JudgeNet, x: np.ndarray, y: np.ndarray, s: JudgeSettings,
                  hist: JudgeHistory | None = None) -> None:
    """Standardise each dimension on real training images; weight blocks to equal total variance;
    project the exposure directions out; fit the class centres and shared (shrunk) covariance of
    the in-domain model."""
    f = raw_embed(model, x)
    mean, std = f.mean(0), f.std(0)
    # a channel (almost) silent on real data (a dead ReLU) must not become a huge axis when an
    # odd image wakes it: floor each std at 5% of its block's median std
    floors, start = [], 0
    for d in model.block_dims:
        floors.append(torch.full((d,), 0.05 * float(std[start : start + d].median()) + 1e-8))
        start += d
    std = torch.maximum(std, torch.cat(floors).double())
    # each block's total variance becomes 1 x sqrt(its size): blocks count about equally,
    # bigger blocks a little more (they hold more independent directions)
    w = torch.cat([torch.full((d,), float(d) ** -0.25) for d in model.block_dims]).double()
    model.feat_mean.copy_(mean.float())
    model.feat_scale.copy_((w / std).float())
    rank, left = fit_exposure_projection(model, x, s)
    if hist is not None:
        hist.exposure_rank, hist.exposure_residual = rank, left
    z = (f - mean) * (w / std)  # the in-domain model keeps exposure (see in_domain_features)
    centres = torch.stack([z[torch.from_numpy(y == c)].mean(0) if (y == c).any() else z.mean(0)
                           for c in range(model.num_classes)])
    resid = z - centres[torch.from_numpy(y)]
    cov = resid.T @ resid / max(len(z) - 1, 1)
    cov = (1 - s.shrinkage) * cov + s.shrinkage * torch.diag(torch.diag(cov))
    cov += 1e-6 * torch.eye(len(cov), dtype=cov.dtype) * torch.diag(cov).mean()
    model.centres.copy_(centres.float())
    model.precision.copy_(torch.linalg.inv(cov).float())


@torch.no_grad()
def in_domain_scores(model: JudgeNet, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """``JudgeNet.in_domain_score`` of images ``[N, 1, R, R]`` in [-1, 1] (<= 1: in domain)."""
    model.eval()
    out = [model.in_domain_score(model.in_domain_features(torch.from_numpy(
        np.ascontiguousarray(x[i : i + batch_size], dtype=np.float32)))) for i in range(0, len(x), batch_size)]
    return torch.cat(out).double().numpy() if out else np.zeros(0)


@torch.no_grad()
def calibrate_in_domain(model: JudgeNet, x: np.ndarray, quantile: float) -> float:
    """Scale the in-domain score so that ``quantile`` of real images ``x`` score <= 1.0."""
    model.ood_scale.fill_(1.0)
    raw = in_domain_scores(model, x)
    scale = float(np.quantile(raw, quantile)) if len(raw) else 1.0
    model.ood_scale.fill_(max(scale, 1e-9))
    return scale
