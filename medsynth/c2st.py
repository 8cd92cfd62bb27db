"""Classifier two-sample test (C2ST, Lopez-Paz & Oquab 2017): can a small CNN tell real from synthetic?

A CNN is trained to separate the *fit* halves of the real and the synthetic set and scored by ROC
AUC on the *held-out* halves: 0.5 = indistinguishable, 1.0 = every synthetic image is spotted.
Unlike FID in a class-trained feature space it needs no prior idea of what "quality" means: noise,
blur, checkerboard artefacts and repeated images all become separable.

* Both sets are resized (bilinear, antialiased when shrinking) to ``C2STSettings.resolution`` so
  one budget fits 28/32/64 px data, and subsampled (seeded) to the same count, at most
  ``max_images`` each, so the classifier sees balanced classes and the cost is bounded.
* Scales (:meth:`C2STSettings.coarse`): at full resolution the test sees pixel texture, and real
  images carry exact 8-bit backgrounds and grain that any resampling breaks, so a 0.6 px Gaussian
  blur of *real* images scores AUC 1.00 (docs/BENCHMARKS.md). Brought down to 16 px it sees anatomy,
  layout and modes: mild changes score ~0.5, smudged anatomy, heavy blur and repeated images do not.
  The gate judges at 16 px; 64 and 32 px are reported.
* Each set is split in halves; the CNN is fitted on real-fit vs synth-fit for ``epochs`` epochs,
  with horizontal flips (no anatomy-changing augmentation: that would hide real differences).
* ``auc_lo``/``auc_hi``: 2.5/97.5 percentiles of the AUC over ``bootstrap`` stratified resamples of
  the held-out predictions (how sure the number is at this sample size; it does not include the
  variation from retraining the CNN).
* Deterministic for a seed on one machine: torch's global RNG is forked, not consumed. bf16
  autocast is used only where the CPU has native bf16 (AVX-512 BF16 / AMX); elsewhere fp32.

Capacity and budget were chosen by measurement (docs/BENCHMARKS.md, "Quality judge"): the
defaults see sigma = 13 grey-level noise and a 3x3 box blur clearly above 0.5 on every bundled
dataset while real-vs-real stays near 0.5, in a few seconds per call on two CPU cores.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medsynth.imaging import resize_images

__all__ = ["C2STResult", "C2STSettings", "c2st", "c2st_floor", "c2st_per_class"]


@dataclass(frozen=True)
class C2STSettings:
    """The detector's capacity and budget (recorded in the evaluation protocol)."""

    resolution: int = 64  # both sets are resized to this before the CNN (antialiased when shrinking)
    residual: bool = True  # feed the high-pass residual beside the image (sees pixel texture: noise, blur)
    standardise: bool = False  # each image to zero mean, unit std first (global brightness/contrast hidden)
    width: int = 16  # channels of the first conv; doubled at each of the 3 stride-2 stages
    epochs: int = 4  # passes over the fit halves (4 saw sigma-13 noise at AUC 0.98-1.0 on CT/CXR; 8: no better, 2x the time)
    batch_size: int = 64
    lr: float = 2e-3  # Adam
    weight_decay: float = 1e-4
    max_images: int = 2000  # per set (real, synthetic), before the fit/held-out split
    min_images: int = 8  # per set: fewer cannot give a held-out AUC
    bootstrap: int = 200  # resamples of the held-out predictions for the 95% interval
    coarse_epochs: int = 8  # passes at a coarse scale (:meth:`coarse`): cheap there, and 4 saw smudged
    # anatomy at 16 px less clearly (AUC 0.66-0.71 vs 0.72-0.74 with 8; held-out real unchanged)
    precision: str = "fp32"  # fp32 | bf16 | auto (bf16 where the CPU has native bf16); bf16 was no faster
    # for this small net on 2 cores (measured), and fp32 gives the same AUC on every machine

    def check(self) -> None:
        if self.resolution not in (16, 28, 32, 64):
            raise ValueError(f"c2st resolution must be 16, 28, 32 or 64, got {self.resolution}")
        if not 4 <= self.width <= 128 or not 1 <= min(self.epochs, self.coarse_epochs) <= 200 or not 2 <= self.batch_size <= 4096:
            raise ValueError(f"c2st width/epochs/batch_size out of range: {self.width}/{self.epochs}/{self.batch_size}")
        if not 0 < self.lr < 1 or self.max_images < self.min_images or self.min_images < 4:
            raise ValueError(f"c2st lr/max_images/min_images out of range: {self.lr}/{self.max_images}/{self.min_images}")
        if self.bootstrap < 0 or self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"c2st bootstrap/precision invalid: {self.bootstrap}/{self.precision!r}")

    def coarse(self, px: int) -> C2STSettings:
        """The same detector on both sets brought down to ``px`` (antialiased), with ``coarse_epochs``."""
        return replace(self, resolution=px, epochs=self.coarse_epochs)

    def to_dict(self) -> dict[str, Any]:
        return {"test": "C2ST (Lopez-Paz & Oquab 2017): CNN real vs synthetic, ROC AUC on held-out halves",
                **asdict(self)}


@dataclass(frozen=True)
class C2STResult:
    """Held-out ROC AUC of the real-vs-synthetic classifier (0.5 = indistinguishable)."""

    auc: float
    auc_lo: float  # bootstrap 2.5th percentile
    auc_hi: float  # bootstrap 97.5th percentile
    n_real: int  # images used per set (fit + held-out)
    n_synth: int
    seconds: float
    precision: str = "fp32"
    held_out_accuracy: float = float("nan")  # threshold 0 on the logit

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Detector(nn.Module):
    """Input: the image and its high-pass residual (image minus its 3x3 box mean, x4), as in
    steganalysis: noise, blur and checkerboards live in that residual, and a few hundred steps
    do not suffice for a CNN to learn the filter itself (measured: with it, sigma 6 noise on CT
    went from AUC 0.52 to 0.85 at the same budget). Then a 4x4 stride-2 stem (every pixel enters,
    at a quarter of a stride-1 stem's cost), two stride-2 stages and one stride-1 stage with
    GroupNorm (no train/eval gap, unlike BatchNorm after a short fit), global average *and* max
    pooling (a local artefact such as an implanted rectangle is a max), and a linear logit."""

    def __init__(self, width: int, residual: bool = True) -> None:
        super().__init__()
        w = width
        self.residual = residual

        def conv(cin: int, cout: int, k: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, k, stride, 1), nn.GroupNorm(4, cout), nn.LeakyReLU(0.2)]

        self.body = nn.Sequential(
            *conv(2 if residual else 1, w, 4, 2),  # w x R/2
            *conv(w, 2 * w, 4, 2),  # 2w x R/4
            *conv(2 * w, 4 * w, 4, 2),  # 4w x R/8
            *conv(4 * w, 4 * w, 3, 1),  # 4w x R/8
        )
        self.head = nn.Linear(8 * w, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.residual:
            local_mean = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
            x = torch.cat([x, 4.0 * (x - local_mean)], 1)
        h = self.body(x)
        pooled = torch.cat([h.mean((2, 3)), h.amax((2, 3))], 1)  # [N, 8w]
        return self.head(pooled.float())[:, 0]  # logit: > 0 means "synthetic"


def _fast_bf16() -> bool:
    if torch.backends.cpu.get_cpu_capability() not in ("AVX512", "AMX"):
        return False
    from medsynth.hardware import cpu_has_fast_bf16

    return cpu_has_fast_bf16()


def _check_images(name: str, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 4 or x.shape[1] != 1 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"c2st: {name} images must be [N, 1, R, R], got shape {x.shape}")
    return x


def _auc(scores: np.ndarray, positive: np.ndarray) -> float:
    from medsynth.metrics import binary_auc

    return binary_auc(scores, positive)


def _bootstrap(scores: np.ndarray, positive: np.ndarray, n: int, seed: int) -> tuple[float, float]:
    """2.5/97.5 percentiles of the AUC over stratified resamples (each class resampled apart)."""
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(positive), np.flatnonzero(~positive)
    lab = np.r_[np.ones(len(pos), bool), np.zeros(len(neg), bool)]
    aucs = np.empty(n)
    for b in range(n):
        idx = np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))]
        aucs[b] = _auc(scores[idx], lab)
    lo, hi = np.nanpercentile(aucs, [2.5, 97.5])
    return float(lo), float(hi)


def c2st(real: np.ndarray, synth: np.ndarray, *, seed: int = 0,
         settings: C2STSettings | None = None) -> C2STResult:
    """Train a CNN to tell ``real`` from ``synth`` and return its held-out ROC AUC.

    Args:
        real: real images float32 ``[N, 1, R, R]`` in [-1, 1] (the real *train* split).
        synth: the set under test, ``[M, 1, R', R']`` in [-1, 1] (any of 28/32/64 px).
        seed: subsampling, split, initialisation, batch order and bootstrap all follow it.

    Raises:
        ValueError: bad shapes, or fewer than ``settings.min_images`` images in a set.
    """
    s = settings or C2STSettings()
    s.check()
    real, synth = _check_images("real", real), _check_images("synthetic", synth)
    if min(len(real), len(synth)) < s.min_images:
        raise ValueError(f"c2st: needs at least {s.min_images} images per set, got {len(real)} real "
                         f"and {len(synth)} synthetic")
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    m = min(len(real), len(synth), s.max_images)  # equal counts: balanced fit and test
    ri = np.sort(rng.choice(len(real), m, replace=False))
    si = np.sort(rng.choice(len(synth), m, replace=False))
    x = torch.cat([resize_images(real[ri], s.resolution), resize_images(synth[si], s.resolution)])
    if s.standardise:
        x = (x - x.mean((1, 2, 3), keepdim=True)) / x.std((1, 2, 3), keepdim=True).clamp_min(1e-3)
    y = torch.cat([torch.zeros(m), torch.ones(m)])
    half = m // 2
    perm_r, perm_s = rng.permutation(m), m + rng.permutation(m)
    fit = np.r_[perm_r[:half], perm_s[:half]]
    test = np.r_[perm_r[half:], perm_s[half:]]
    use_bf16 = s.precision == "bf16" or (s.precision == "auto" and _fast_bf16())
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG stream alone
        torch.manual_seed(seed)
        model = _fit(x[fit], y[fit], s, use_bf16, seed)
        scores = _predict(model, x[test], use_bf16)
    positive = y[test].numpy() > 0.5
    auc = _auc(scores, positive)
    lo, hi = _bootstrap(scores, positive, s.bootstrap, seed)
    acc = float(((scores > 0) == positive).mean())
    return C2STResult(auc=auc, auc_lo=lo, auc_hi=hi, n_real=m, n_synth=m, seconds=time.perf_counter() - t0,
                      precision="bf16" if use_bf16 else "fp32", held_out_accuracy=acc)


def _fit(x: torch.Tensor, y: torch.Tensor, s: C2STSettings, bf16: bool, seed: int) -> _Detector:
    model = _Detector(s.width, s.residual).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    steps_per_epoch = max(1, int(np.ceil(len(x) / s.batch_size)))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=s.lr, total_steps=s.epochs * steps_per_epoch,
                                                pct_start=0.2)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(s.epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), s.batch_size):
            idx = order[i : i + s.batch_size]
            xb, yb = x[idx], y[idx]
            flip = torch.rand(len(idx), generator=gen) < 0.5  # per-image horizontal flip
            xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb).contiguous(
                memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logit = model(xb)
            loss = F.binary_cross_entropy_with_logits(logit.float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


@torch.no_grad()
def _predict(model: _Detector, x: torch.Tensor, bf16: bool, batch_size: int = 512) -> np.ndarray:
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            # average over the flip the model was trained with: less variance at no real cost
            out.append(((model(xb) + model(xb.flip(-1))) / 2).float())
    return torch.cat(out).numpy().astype(np.float64)


def c2st_floor(real_a: np.ndarray, real_b: np.ndarray, *, seed: int = 0,
               settings: C2STSettings | None = None) -> C2STResult:
    """The control: the same test between two real sets (e.g. train split vs test split).

    Its AUC (``c2st_auc_floor``) is what "indistinguishable" measures at this sample size: about
    0.5, above it only when the two real splits themselves differ.
    """
    return c2st(real_a, real_b, seed=seed, settings=settings)


def c2st_per_class(real: np.ndarray, real_labels: np.ndarray, synth: np.ndarray, synth_labels: np.ndarray,
                   *, seed: int = 0, settings: C2STSettings | None = None) -> dict[int, C2STResult]:
    """C2ST within each class present in both sets (conditional models: the worst class decides).

    Classes with fewer than ``settings.min_images`` images on either side are left out (absent
    from the dict, not NaN).
    """
    s = settings or C2STSettings()
    real_labels = np.asarray(real_labels).reshape(-1)
    synth_labels = np.asarray(synth_labels).reshape(-1)
    if len(real_labels) != len(real) or len(synth_labels) != len(synth):
        raise ValueError("c2st_per_class: one label per image is needed in each set")
    out: dict[int, C2STResult] = {}
    for c in np.intersect1d(np.unique(real_labels), np.unique(synth_labels)):
        r, g = real[real_labels == c], synth[synth_labels == c]
        if min(len(r), len(g)) >= s.min_images:
            out[int(c)] = c2st(r, g, seed=seed + int(c), settings=s)
    return out
