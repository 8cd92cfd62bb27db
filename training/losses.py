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
