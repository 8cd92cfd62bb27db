"""Networks: the DCGAN of Radford et al. (as in pytorch/examples ``dcgan/main.py``) and its
class-conditional variant, for 1-channel images at 28, 32 and 64 px.

Shapes. The 64 px networks are exactly the pytorch/examples ones (nz=100, ngf=ndf=64)::

    G: z 100x1x1 -> 512x4x4 -> 256x8x8 -> 128x16x16 -> 64x32x32 -> 1x64x64 (tanh)
    D: 1x64x64 -> 64x32x32 -> 128x16x16 -> 256x8x8 -> 512x4x4 -> 1 logit

32 px drops one stride-2 block at each end. 28 px (MedMNIST) uses an **adapted first block**: the
first transposed conv has a 7x7 kernel (z -> 7x7 instead of 4x4) and D's last conv a 7x7 kernel,
so the network makes 28x28 natively -- no padded border pixels that D could use to tell real
from fake, and no wasted compute on a 32 px canvas.

Conditional GAN (``cgan``): the label enters G as a learned embedding concatenated to z, and D
is a **projection discriminator** (Miyato & Koyama 2018): ``D(x, y) = psi(phi(x)) + <e(y), phi(x)>``.
We chose projection over an auxiliary classifier (AC-GAN) because AC-GAN's extra classification
loss pushes G towards easily classified, low-diversity images per class (a known collapse mode),
while projection keeps one adversarial loss, works with both non-saturating and hinge losses and
with spectral norm. For the multi-modality configuration each class also has a modality
(CT/MR/XR): both networks add a modality embedding to the class embedding, so the condition is
(modality, class) and classes of one modality share what they have in common.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _sn

from medsynth.errors import ConfigError
from medsynth.imaging import RESOLUTIONS


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a network (saved with checkpoints and served models)."""

    kind: str = "dcgan"
    arch: str = "dcgan"  # dcgan (transposed convs, as pytorch/examples) | resize | resnet (training/resnet.py)
    resolution: int = 64
    channels: int = 1
    nz: int = 100
    ngf: int = 64
    ndf: int = 64
    num_classes: int = 0  # 0: unconditional
    embed_dim: int = 64  # label embedding size fed to G with z (cgan)
    class_modality: list[int] = field(default_factory=list)  # per class: modality index (cgan)
    spectral_norm: bool = False
    minibatch_std: bool = False  # D sees the batch's per-feature spread (Karras et al. 2018): fights collapse
    minibatch_std_by_class: bool = False  # conditional D: the spread within same-class groups (per-class collapse)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        d = dict(d)
        d["class_modality"] = list(d.get("class_modality") or [])
        return cls(**d)


def layout(resolution: int) -> tuple[int, int]:
    """(first feature-map size, number of stride-2 upsamplings) for a resolution.

    Raises:
        ConfigError: the networks cannot make this resolution.
    """
    for base in (4, 7):
        n, r = 0, resolution
        while r > base and r % 2 == 0:
            r //= 2
            n += 1
        if r == base and n >= 2 and resolution in RESOLUTIONS:
            return base, n
    raise ConfigError(
        f"resolution {resolution}: the DCGAN networks cannot make it; valid: {', '.join(map(str, RESOLUTIONS))}"
    )


def init_weights(m: nn.Module) -> None:
    """DCGAN init: conv weights N(0, 0.02), batch-norm scale N(1, 0.02) and bias 0.

    Label embeddings (G's input embedding and D's projection) are set to N(0, 0.02) by the
    networks themselves. At PyTorch's default N(0, 1), G's embedding is a large batch-constant
    input: it adds a fixed spatial pattern per class that batch norm does not remove, G learns to
    rely on it instead of z, and every class collapses to one image (measured by the study on the
    bundled data: breast MRI coverage 0.01 vs 0.68 at 0.02; docs/RESULTS.md). Small embeddings
    still carry the label: G learns to scale them up as far as the discriminator asks.
    """
    name = type(m).__name__
    if "Conv" in name:
        w = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
        nn.init.normal_(w, 0.0, 0.02)
    elif "BatchNorm" in name:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class _Condition(nn.Module):
    """Class embedding plus (optionally) a modality embedding: ``e(y) = E_c[y] + E_m[mod(y)]``."""

    def __init__(self, num_classes: int, dim: int, class_modality: Sequence[int]):
        super().__init__()
        self.classes = nn.Embedding(num_classes, dim)
        mods = list(class_modality)
        self.modalities = nn.Embedding(max(mods) + 1, dim) if len(set(mods)) > 1 else None
        self.register_buffer("class_modality", torch.tensor(mods or [0] * num_classes, dtype=torch.long),
                             persistent=False)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        e = self.classes(y)
        if self.modalities is not None:
            e = e + self.modalities(self.class_modality[y])
        return e


def _up(arch: str, c_in: int, c_out: int) -> list[nn.Module]:
    """One 2x upsampling: a 4x4 stride-2 transposed conv (``dcgan``) or, for ``resize``, a
    nearest-neighbour resize then a 3x3 conv, which cannot paint the checkerboard that the uneven
    overlap of transposed convolutions does (Odena et al. 2016)."""
    if arch == "resize":
        return [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False)]
    return [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False)]


class Generator(nn.Module):
    """DCGAN generator; conditional when ``spec.num_classes > 0``. Output in [-1, 1]."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        base, n_up = layout(spec.resolution)
        in_dim = spec.nz
        self.cond = None
        if spec.num_classes > 0:
            self.cond = _Condition(spec.num_classes, spec.embed_dim, spec.class_modality)
            in_dim += spec.embed_dim
        ch = spec.ngf * 2 ** (n_up - 1)
        # first block: (nz [+ embed]) x 1 x 1 -> ch x base x base (base = 4, or 7 at 28 px)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(in_dim, ch, base, 1, 0, bias=False), nn.BatchNorm2d(ch), nn.ReLU(True)
        ]
        # each block doubles the size and halves the channels: ... -> ngf x R/2 x R/2
        for _ in range(n_up - 1):
            layers += [*_up(spec.arch, ch, ch // 2), nn.BatchNorm2d(ch // 2), nn.ReLU(True)]
            ch //= 2
        # last block: ngf x R/2 x R/2 -> channels x R x R
        layers += [*_up(spec.arch, ch, spec.channels), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        self.apply(init_weights)
        if self.cond is not None:
            for emb in (self.cond.classes, self.cond.modalities):
                if emb is not None:
                    nn.init.normal_(emb.weight, 0.0, 0.02)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        z = z.reshape(z.shape[0], -1, 1, 1)
        if self.cond is not None:
            if y is None:
                raise ConfigError("conditional generator: labels are required")
            z = torch.cat([z, self.cond(y).to(z.dtype)[:, :, None, None]], dim=1)
        return self.main(z)


class Discriminator(nn.Module):
    """DCGAN discriminator returning logits [N]; a projection discriminator when conditional.

    With spectral norm every conv/embedding is normalised and batch norm is left out (SNGAN).
    """

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        base, n_down = layout(spec.resolution)
        sn = _sn if spec.spectral_norm else (lambda m: m)
        ch = spec.ndf
        # first block: channels x R x R -> ndf x R/2 x R/2 (no batch norm, as in DCGAN)
        layers: list[nn.Module] = [sn(nn.Conv2d(spec.channels, ch, 4, 2, 1, bias=False)), nn.LeakyReLU(0.2, True)]
        # each block halves the size and doubles the channels: ... -> ch x base x base
        for _ in range(n_down - 1):
            layers.append(sn(nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False)))
            if not spec.spectral_norm:
                layers.append(nn.BatchNorm2d(ch * 2))
            layers.append(nn.LeakyReLU(0.2, True))
            ch *= 2
        self.features = nn.Sequential(*layers)
        # ch (+1 minibatch-std map) x base x base -> 1 logit (the unconditional term psi)
        self.out = sn(nn.Conv2d(ch + int(spec.minibatch_std), 1, base, 1, 0, bias=False))
        self.cond = None
        if spec.num_classes > 0:
            self.cond = _Condition(spec.num_classes, ch, spec.class_modality)
            for emb in (self.cond.classes, self.cond.modalities):
                if emb is not None:
                    nn.init.normal_(emb.weight, 0.0, 0.02)
            if spec.spectral_norm:
                self.cond.classes = _sn(self.cond.classes)
        self.apply(init_weights)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(x)  # ch x base x base
        if self.spec.minibatch_std:
            by = y if (self.spec.minibatch_std_by_class and self.cond is not None) else None
            logit = self.out(minibatch_std(h, labels=by)).flatten()  # N
        else:
            logit = self.out(h).flatten()
        if self.cond is not None:
            if y is None:
                raise ConfigError("conditional discriminator: labels are required")
            phi = h.sum(dim=(2, 3))  # N x ch: sum-pooled features
            logit = logit + (self.cond(y).to(phi.dtype) * phi).sum(dim=1)  # projection term
        return logit


ARCHS = ("dcgan", "resize", "resnet")


def check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise ConfigError(f"train.arch: unknown architecture {arch!r}; valid: {', '.join(ARCHS)}")


def minibatch_std(h: torch.Tensor, group: int = 4, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Append one feature map: the standard deviation of the features across a group of images.

    A generator that makes the same image for every z gives D a zero here, which real batches
    never do, so collapse is penalised directly (ProGAN's minibatch standard deviation).
    ``[N, C, H, W] -> [N, C + 1, H, W]``.

    With ``labels`` the groups are formed from images of the same class (the batch sorted by label,
    consecutive runs of ``group``): across mixed classes the spread is mostly the difference
    between classes, so a generator that makes one image *per class* would go unnoticed.
    """
    n, c, hh, ww = h.shape
    g = min(group, n)
    while n % g:
        g -= 1
    if labels is not None:
        order = torch.argsort(labels, stable=True)
        y = h.float()[order].reshape(n // g, g, c, hh, ww)
        s = (y.var(dim=1, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # n // g, one per group
        s_sorted = s.repeat_interleave(g)
        s_all = torch.empty_like(s_sorted)
        s_all[order] = s_sorted
        return torch.cat([h, s_all.reshape(n, 1, 1, 1).expand(n, 1, hh, ww).to(h.dtype)], dim=1)
    y = h.float().reshape(g, n // g, c, hh, ww)
    s = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # n // g
    s = s.reshape(1, n // g, 1, 1, 1).expand(g, n // g, 1, hh, ww).reshape(n, 1, hh, ww)
    return torch.cat([h, s.to(h.dtype)], dim=1)


def count_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())
