"""Exponential moving average of G's weights, the copy used for evaluation and serving.

Averaging the generator over the last few thousand steps removes much of the step-to-step
oscillation of GAN training (Yazici et al. 2019); buffers (batch-norm statistics) are copied.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """``ema = d * ema + (1 - d) * weights`` with a warm-up: ``d = min(decay, (1 + t) / (10 + t))``."""

    def __init__(self, model: nn.Module, decay: float = 0.999):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for e, p in zip(self.model.parameters(), model.parameters(), strict=True):
            e.lerp_(p.detach(), 1.0 - d)
        for e, b in zip(self.model.buffers(), model.buffers(), strict=True):
            e.copy_(b)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])
