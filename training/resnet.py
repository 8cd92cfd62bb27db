"""Residual generator and discriminator (``arch: resnet``): the recipe that makes recognisable images.

Why not the DCGAN networks (``arch: dcgan``, training/models.py)? Their transposed convolutions
(kernel 4, stride 2) overlap unevenly and paint a checkerboard into every image (Odena et al.
2016, "Deconvolution and checkerboard artifacts"); on the bundled CT set it is visible in every
sample grid and an independent real-vs-synthetic classifier separates them perfectly. Here:

- **G** upsamples by nearest-neighbour resize followed by a 3x3 convolution (resize-convolution:
  no uneven overlap, so no checkerboard), in residual blocks as in SNGAN (Miyato et al. 2018) /
  BigGAN (Brock et al. 2019). A conditional model modulates every batch norm with a per-class gain
  and bias (conditional batch norm, de Vries et al. 2017) instead of concatenating a label to z,
  so the class acts at every scale.
- **D** is the SNGAN residual discriminator: spectral norm on every layer, average-pool
  downsampling, sum-pooled features, and for a conditional model the projection term
  ``<e(y), phi(x)>`` (Miyato & Koyama 2018).

Shapes at 64 px with ngf = ndf = 32 (ch = 8, 8, 4, 2, 1 x 32)::

    G: z 128 -> 256x4x4 -> 256x8x8 -> 128x16x16 -> 64x32x32 -> 32x64x64 -> 1x64x64 (tanh)
    D: 1x64x64 -> 32x32x32 -> 64x16x16 -> 128x8x8 -> 256x4x4 -> 256 (sum) -> 1 logit

32 px drops one block at each end; 28 px (MedMNIST) starts G at 7x7 and ends D at 7x7.
Train it with the hinge loss, two time-scale learning rates and Adam betas (0, 0.9) (see the
``arch: resnet`` defaults in params.yaml and docs/BENCHMARKS.md for the measurement).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _sn

from medsynth.errors import ConfigError


def _layout(resolution: int) -> tuple[int, int]:
    from medsynth.training.models import layout

    return layout(resolution)


def _widths(base_width: int, n_blocks: int) -> list[int]:
    """Channels at each scale, from the coarsest: 8w, 8w, 4w, 2w, w (the last ``n_blocks + 1``)."""
    return [base_width * m for m in (8, 8, 4, 2, 1)[-(n_blocks + 1):]]


class CondBatchNorm(nn.Module):
    """Batch norm whose gain and bias depend on the condition (identity at init)."""

    def __init__(self, ch: int, cond_dim: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(ch, affine=cond_dim == 0)
        self.gain = nn.Linear(cond_dim, ch, bias=False) if cond_dim else None
        self.bias = nn.Linear(cond_dim, ch, bias=False) if cond_dim else None
        for lin in (self.gain, self.bias):
            if lin is not None:
                nn.init.zeros_(lin.weight)

    def forward(self, x: torch.Tensor, e: torch.Tensor | None) -> torch.Tensor:
        h = self.bn(x)
        if self.gain is None or e is None:
            return h
        g = 1.0 + self.gain(e).to(h.dtype)[:, :, None, None]
        return h * g + self.bias(e).to(h.dtype)[:, :, None, None]


class GBlock(nn.Module):
    """BN-ReLU-up-conv3-BN-ReLU-conv3 plus an up-conv1 shortcut: ``c_in x s x s -> c_out x 2s x 2s``."""

    def __init__(self, c_in: int, c_out: int, cond_dim: int):
        super().__init__()
        self.bn1, self.bn2 = CondBatchNorm(c_in, cond_dim), CondBatchNorm(c_out, cond_dim)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.skip = nn.Conv2d(c_in, c_out, 1, 1, 0)

    def forward(self, x: torch.Tensor, e: torch.Tensor | None) -> torch.Tensor:
        h = F.interpolate(F.relu(self.bn1(x, e)), scale_factor=2.0, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h), e)))
        return h + self.skip(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DBlock(nn.Module):
    """(ReLU)-conv3-ReLU-conv3-avgpool plus a conv1-avgpool shortcut: ``c_in x s x s -> c_out x s/2``."""

    def __init__(self, c_in: int, c_out: int, first: bool, down: bool = True):
        super().__init__()
        self.first, self.down = first, down
        self.conv1 = _sn(nn.Conv2d(c_in, c_out, 3, 1, 1))
        self.conv2 = _sn(nn.Conv2d(c_out, c_out, 3, 1, 1))
        self.skip = _sn(nn.Conv2d(c_in, c_out, 1, 1, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else F.relu(x)
        h = self.conv2(F.relu(self.conv1(h)))
        if self.down:
            h = F.avg_pool2d(h, 2)
        # the first block pools before its shortcut conv (cheaper, SNGAN's "optimized" block)
        s = self.skip(F.avg_pool2d(x, 2) if self.first and self.down else x)
        if self.down and not self.first:
            s = F.avg_pool2d(s, 2)
        return h + s


class ResGenerator(nn.Module):
    """Residual resize-convolution generator; conditional (CBN) when ``spec.num_classes > 0``."""

    def __init__(self, spec):
        super().__init__()
        from medsynth.training.models import _Condition

        self.spec = spec
        base, n_up = _layout(spec.resolution)
        ch = _widths(spec.ngf, n_up)
        self.base = base
        self.cond = _Condition(spec.num_classes, spec.embed_dim, spec.class_modality) if spec.num_classes else None
        cond_dim = spec.embed_dim if self.cond is not None else 0
        self.fc = nn.Linear(spec.nz, ch[0] * base * base)  # z -> ch0 x base x base
        self.blocks = nn.ModuleList(GBlock(ch[i], ch[i + 1], cond_dim) for i in range(n_up))
        self.bn_out = nn.BatchNorm2d(ch[-1])
        self.out = nn.Conv2d(ch[-1], spec.channels, 3, 1, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m not in self._cbn_linears():
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if self.cond is not None:
            for emb in (self.cond.classes, self.cond.modalities):
                if emb is not None:
                    nn.init.normal_(emb.weight, 0.0, 1.0)

    def _cbn_linears(self) -> list[nn.Module]:
        return [lin for m in self.modules() if isinstance(m, CondBatchNorm) for lin in (m.gain, m.bias) if lin is not None]

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        e = None
        if self.cond is not None:
            if y is None:
                raise ConfigError("conditional generator: labels are required")
            e = self.cond(y)
        h = self.fc(z.reshape(z.shape[0], -1)).view(z.shape[0], -1, self.base, self.base)
        for block in self.blocks:
            h = block(h, e)
        return torch.tanh(self.out(F.relu(self.bn_out(h))))


class ResDiscriminator(nn.Module):
    """SNGAN residual discriminator returning logits [N]; projection term when conditional."""

    def __init__(self, spec):
        super().__init__()
        from medsynth.training.models import _Condition

        self.spec = spec
        base, n_down = _layout(spec.resolution)
        ch = _widths(spec.ndf, n_down)[::-1]  # w, 2w, 4w, 8w, 8w
        blocks = [DBlock(spec.channels, ch[0], first=True)]
        blocks += [DBlock(ch[i], ch[i + 1], first=False) for i in range(n_down - 1)]
        blocks.append(DBlock(ch[n_down - 1], ch[n_down], first=False, down=False))  # ch x base x base
        self.blocks = nn.Sequential(*blocks)
        self.out = _sn(nn.Linear(ch[n_down], 1))
        self.cond = None
        if spec.num_classes:
            self.cond = _Condition(spec.num_classes, ch[n_down], spec.class_modality)
            self.cond.classes = _sn(self.cond.classes)
            if self.cond.modalities is not None:
                self.cond.modalities = _sn(self.cond.modalities)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        phi = F.relu(self.blocks(x)).sum(dim=(2, 3))  # N x ch: sum-pooled features
        logit = self.out(phi).flatten()
        if self.cond is not None:
            if y is None:
                raise ConfigError("conditional discriminator: labels are required")
            logit = logit + (self.cond(y).to(phi.dtype) * phi).sum(dim=1)  # projection term
        return logit


@torch.no_grad()
def recalibrate_batchnorm(net: nn.Module, nz: int, num_classes: int, device: torch.device,
                          batches: int = 16, batch_size: int = 64, seed: int = 0) -> None:
    """Re-estimate batch-norm running statistics of ``net`` (an EMA generator) from its own outputs.

    The EMA copy's weights are an average, but its running statistics were copied from the live
    generator; in eval mode that mismatch washes images out. A few forward passes in train mode
    with a cumulative average give statistics that match the averaged weights ("standing
    statistics", Brock et al. 2019).
    """
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    if not bns:
        return
    was = net.training
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the calibration batches
    net.train()
    gen = torch.Generator().manual_seed(seed)
    for _ in range(batches):
        z = torch.randn(batch_size, nz, generator=gen).to(device)
        y = torch.randint(0, num_classes, (batch_size,), generator=gen).to(device) if num_classes else None
        net(z, y)
    for m, mom in zip(bns, saved, strict=True):
        m.momentum = mom
    net.train(was)
