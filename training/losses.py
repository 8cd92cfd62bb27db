"""Adversarial objectives on discriminator logits, computed in fp32 (also under autocast).

- ``ns``: the non-saturating loss of Goodfellow et al., as in pytorch/examples dcgan (BCE on a
  sigmoid output is ``softplus`` on the logit; the logit form is the numerically stable one).
- ``hinge``: the hinge loss of SAGAN/SNGAN, usually paired with spectral norm in D.
"""

from __future__ import annotations

import enum

import torch
import torch.nn.functional as F


class LossKind(enum.StrEnum):
    NS = "ns"
    HINGE = "hinge"


def d_loss(kind: LossKind, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator loss (scalar): low when real logits are high and fake logits low."""
    r, f = real_logits.float(), fake_logits.float()
    if kind is LossKind.HINGE:
        return F.relu(1.0 - r).mean() + F.relu(1.0 + f).mean()
    # -log sigmoid(r) - log(1 - sigmoid(f))
    return F.softplus(-r).mean() + F.softplus(f).mean()


def g_loss(kind: LossKind, fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator loss (scalar): low when D scores the fakes as real."""
    f = fake_logits.float()
    if kind is LossKind.HINGE:
        return -f.mean()
    return F.softplus(-f).mean()  # -log sigmoid(f): non-saturating


def d_prob(logits: torch.Tensor) -> float:
    """Mean D output as a probability (D(x), D(G(z)) in pytorch/examples' logs)."""
    return float(torch.sigmoid(logits.detach().float()).mean())


def mode_seeking_loss(x1: torch.Tensor, x2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor,
                      eps: float = 1e-5) -> torch.Tensor:
    """MSGAN's regulariser (Mao et al., CVPR 2019): 1 / (image distance / latent distance).

    ``x1``/``x2`` are made from the same class with latents ``z1``/``z2``; minimising this makes
    different z give different images (a generator that ignores z scores 1/eps).
    """
    ratio = (x1.float() - x2.float()).abs().mean() / (z1.float() - z2.float()).abs().mean()
    return 1.0 / (ratio + eps)
