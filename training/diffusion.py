"""Class-conditional latent diffusion (``train.model: ldm``), built on MONAI's generative blocks.

The recipe follows Medfusion (Mueller-Franzes et al., Sci Rep 2023) and Rombach et al. 2022, sized
for CPU minutes:

1. **Autoencoder** (MONAI ``AutoencoderKL``): 1 x R x R images -> 4 x R/4 x R/4 latents (R/2 at
   28 px, so the latent grid stays even), trained first for ``ae_steps`` with L1 + a tiny KL term
   (1e-6, as latent diffusion does: the latent is near-deterministic, only its scale is bounded).
   The latent's standard deviation over the training set is stored (``latent_scale``) so the
   diffusion model sees unit-variance latents. With ``class_norm`` (conditional models) each class is
   standardised by its own mean and standard deviation instead (``class_shift``, ``class_scale``):
   a low-contrast class (ChestCT's coarse view varies 5.6 x less than the set's) otherwise lives in a
   sliver of the latent space, every noise level is noisier for it than for the others, and the
   denoiser's error, the same in absolute terms for every class, is large beside its structure. Off by
   default; the shipped ct model uses it (docs/BENCHMARKS.md, "A decoder that adds texture (ct)").
2. **Denoiser** (MONAI ``DiffusionModelUNet``): a UNet on the latents with the class as an
   embedding (plus a "no class" embedding, dropped in for 10 % of the training images: classifier-
   free guidance is then available at sampling time), v-prediction, the scaled-linear schedule of
   latent diffusion over 1,000 steps. The training set's latents are computed once when the
   autoencoder is done (the encoder is frozen from then on), so a denoiser step costs the UNet only.
3. **Sampling** (MONAI ``DDIMScheduler``, eta 0): ``sample_steps`` evaluations (25 by default),
   deterministic in the seed, then the decoder at full resolution.

Measured time-to-quality on 2 CPU cores against the GAN recipe: docs/BENCHMARKS.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medsynth.errors import ConfigError
from medsynth.imaging import resize_tensor, to_unit_tensor
from medsynth.training.sampler import SamplerBase

LATENT_CHANNELS = 4
TIMESTEPS = 1000
SCHEDULE = {"schedule": "scaled_linear_beta", "beta_start": 0.0015, "beta_end": 0.0195}  # MONAI LDM tutorials
KL_WEIGHT = 1e-6
AUTOENCODERS = ("kl", "patch", "cascade")
UNCOND_SHARE = 0.1  # share of training images whose class is replaced by "no class" (guidance)


@dataclass(frozen=True)
class DiffusionSpec:
    """Everything needed to rebuild a latent diffusion model (saved with checkpoints and served files)."""

    kind: str = "ldm"
    resolution: int = 64
    channels: int = 1
    num_classes: int = 0  # 0: unconditional
    class_modality: list[int] = field(default_factory=list)  # kept for the multi-modality data (not embedded)
    # kl: MONAI AutoencoderKL (trained first) | patch: space-to-depth, lossless, nothing to train |
    # cascade: the latent is the image itself at R/4 (antialiased, as the gate's coarse view), the decoder a
    # super-resolution network trained first, its output projected back onto the sample's coarse view
    autoencoder: str = "cascade"
    ae_channels: list[int] = field(default_factory=lambda: [32, 32, 64])
    latent_channels: int = LATENT_CHANNELS  # kl only (patch: channels x factor^2)
    unet_channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    sample_steps: int = 25  # DDIM evaluations when generating
    guidance: float = 1.0  # classifier-free guidance scale at sampling (1: plain conditional)
    class_norm: bool = False  # conditional: each class's latents standardised by its own mean / std

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DiffusionSpec:
        d = dict(d)
        for key in ("class_modality", "ae_channels", "unet_channels"):
            d[key] = [int(v) for v in d.get(key) or []] or getattr(cls(), key)
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    @property
    def down(self) -> int:
        """Autoencoder downsamplings: R -> R/4 (R/2 at 28 px, whose quarter is odd)."""
        return 2 if self.resolution % 8 == 0 else 1

    @property
    def latent_side(self) -> int:
        return self.resolution // (2 ** self.down)

    @property
    def latent_depth(self) -> int:
        """Channels of the latent grid: the autoencoder's, or every pixel of a 4 x 4 (2 x 2) patch."""
        if self.autoencoder == "kl":
            return self.latent_channels
        return self.channels * 4 ** self.down if self.autoencoder == "patch" else self.channels

    def unet_levels(self) -> list[int]:
        """The UNet's channels, cut to the levels the latent grid halves into evenly (>= 4 px)."""
        n, side = 1, self.latent_side
        while n < len(self.unet_channels) and side % 2 == 0 and side // 2 >= 4:
            side //= 2
            n += 1
        return list(self.unet_channels[:n])

    def check(self) -> None:
        if self.autoencoder not in AUTOENCODERS:
            raise ConfigError(f"autoencoder {self.autoencoder!r}: valid: {', '.join(AUTOENCODERS)}")
        if self.resolution not in (28, 32, 64):
            raise ConfigError(f"resolution {self.resolution}: the latent diffusion model makes 28, 32 or 64 px")
        if self.autoencoder == "kl" and len(self.ae_channels) < self.down + 1:
            raise ConfigError(f"ae_channels: the kl autoencoder needs {self.down + 1} widths at {self.resolution} px "
                              f"(one per level, {self.down} downsamplings), got {self.ae_channels}")
        if not 1 <= self.sample_steps <= TIMESTEPS:
            raise ConfigError(f"sample_steps: must be in 1..{TIMESTEPS}, got {self.sample_steps}")
        if not 0.0 <= self.guidance <= 20.0:
            raise ConfigError(f"guidance: must be in [0, 20], got {self.guidance}")


class LatentDiffusion(nn.Module):
    """Autoencoder + latent denoiser; ``latent_scale`` (a buffer) travels with the weights."""

    def __init__(self, spec: DiffusionSpec):
        super().__init__()
        from monai.networks.nets import AutoencoderKL, DiffusionModelUNet

        spec.check()
        self.spec = spec
        self.ae: nn.Module | None = None  # patch: pixel (un)shuffle, no weights
        if spec.autoencoder == "cascade":
            self.ae = SuperResolver(2 ** spec.down, spec.ae_channels[0], spec.channels)
        if spec.autoencoder == "kl":
            ae_ch = tuple(spec.ae_channels[: spec.down + 1])
            self.ae = AutoencoderKL(spatial_dims=2, in_channels=spec.channels, out_channels=spec.channels,
                                    channels=ae_ch, latent_channels=spec.latent_channels, num_res_blocks=1,
                                    attention_levels=(False,) * len(ae_ch), norm_num_groups=min(16, ae_ch[0]),
                                    with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False)
        levels = spec.unet_levels()
        self.unet = DiffusionModelUNet(
            spatial_dims=2, in_channels=spec.latent_depth, out_channels=spec.latent_depth,
            channels=tuple(levels), attention_levels=tuple(i == len(levels) - 1 for i in range(len(levels))),
            num_res_blocks=1, num_head_channels=math.gcd(32, *levels), norm_num_groups=min(32, levels[0]),
            num_class_embeds=spec.num_classes + 1 if spec.num_classes else None)
        self.register_buffer("latent_scale", torch.ones(()))
        if self.class_norm:
            self.register_buffer("class_shift", torch.zeros(spec.num_classes))
            self.register_buffer("class_scale", torch.ones(spec.num_classes))

    @property
    def class_norm(self) -> bool:
        return bool(self.spec.class_norm and self.spec.num_classes)

    @property
    def null_class(self) -> int:
        return self.spec.num_classes  # the "no class" embedding

    @property
    def factor(self) -> int:
        return 2 ** self.spec.down

    def raw_encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> latents before scaling (the encoder's mean, the pixels of each patch, or the
        image at the latent size)."""
        if self.spec.autoencoder == "patch":
            return F.pixel_unshuffle(x, self.factor)
        if self.spec.autoencoder == "cascade":
            return resize_tensor(x, self.spec.latent_side, -1.0, 1.0)
        return self.ae.quant_conv_mu(self.ae.encoder(x))

    def _norm(self, y: torch.Tensor | None, like: torch.Tensor) -> tuple[torch.Tensor | float, torch.Tensor]:
        """(shift, scale) from raw latents to the denoiser's: per class with ``class_norm``, else (0, latent_scale)."""
        if not self.class_norm:
            return 0.0, self.latent_scale
        if y is None:
            raise ConfigError("this model standardises each class's latents: it needs the class of every image")
        view = (-1,) + (1,) * (like.dim() - 1)
        return self.class_shift[y].view(view), self.class_scale[y].view(view)

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Images in [-1, 1] (of classes ``y``) -> unit-scale latents."""
        raw = self.raw_encode(x)
        shift, scale = self._norm(y, raw)
        return (raw - shift) / scale

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Unit-scale latents (of classes ``y``) -> images."""
        shift, scale = self._norm(y, z)
        return self.raw_decode(z * scale + shift)

    def raw_decode(self, z: torch.Tensor) -> torch.Tensor:
        if self.spec.autoencoder == "patch":
            return F.pixel_shuffle(z, self.factor)
        if self.spec.autoencoder == "cascade":
            return back_project(self.ae(z), z)
        return self.ae.decode(z)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.raw_decode(self.raw_encode(x))

    def coder_loss(self, x: torch.Tensor, coder: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """(training loss, L1) of the autoencoder / super-resolver on real images ``x`` (``coder``: self.ae or its
        DDP wrapper)."""
        if self.spec.autoencoder == "cascade":
            l1 = (coder(self.raw_encode(x)).float() - x.float()).abs().mean()
            return l1, l1
        recon, mu, sigma = coder(x)
        return ae_loss_terms(x, recon, mu, sigma)

    def denoise(self, z: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return self.unet(z, t, class_labels=y)



class SuperResolver(nn.Module):
    """The cascade's decoder: R/f -> R, bilinear upsampling plus a learned residual (two conv blocks per x2)."""

    def __init__(self, factor: int, width: int = 16, channels: int = 1):
        super().__init__()
        self.factor = factor
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.SiLU()]
        for _ in range(int(math.log2(factor))):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(width, width, 3, padding=1),
                       nn.GroupNorm(min(8, width), width), nn.SiLU(), nn.Conv2d(width, width, 3, padding=1), nn.SiLU()]
        layers.append(nn.Conv2d(width, channels, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        up = resize_tensor(z, z.shape[-1] * self.factor)
        return up + self.net(z)


class PatchCritic(nn.Module):
    """The discriminator of the decoder's adversarial fine-tuning (``train.decoder_steps``): pix2pix's conditional
    PatchGAN (Isola et al. 2017) with spectral norm (Miyato et al. 2018). It sees an image beside its coarse view
    brought up to the image's size and gives one logit per patch (~30 px receptive field), so it judges the
    detail a decoder adds to a given coarse view, not the coarse view itself."""

    def __init__(self, channels: int = 1, width: int = 32):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        layers: list[nn.Module] = []
        c_in = 2 * channels
        for c_out in (width, 2 * width, 4 * width):
            layers += [sn(nn.Conv2d(c_in, c_out, 4, 2, 1)), nn.LeakyReLU(0.2)]
            c_in = c_out
        layers.append(sn(nn.Conv2d(c_in, 1, 3, padding=1)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, resize_tensor(low, x.shape[-1])], 1))


def decoder_gan_losses(ldm: LatentDiffusion, decoder: nn.Module, critic: nn.Module, x: torch.Tensor,
                       adv_weight: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(critic loss, decoder loss, L1) of one adversarial fine-tuning step of the cascade's super-resolver on real
    images ``x`` in [-1, 1] (``decoder``: ``ldm.ae``; ``critic``: a :class:`PatchCritic`).

    The decoder's loss is L1 + ``adv_weight`` x the hinge generator loss, on the decoded image as served (after
    back-projection, so the coarse view is the input's whatever texture is added). The critic's loss is computed
    on the decoded image detached: backpropagate it into the critic only."""
    from medsynth.training.losses import LossKind, d_loss, g_loss

    low = ldm.raw_encode(x)
    fake = back_project(decoder(low), low)
    critic_loss = d_loss(LossKind.HINGE, critic(x, low), critic(fake.detach(), low))
    l1 = (fake.float() - x.float()).abs().mean()
    return critic_loss, l1 + adv_weight * g_loss(LossKind.HINGE, critic(fake, low)), l1


def back_project(x: torch.Tensor, low: torch.Tensor, rounds: int = 10) -> torch.Tensor:
    """Correct ``x`` so that its antialiased downsample is ``low`` (iterative back-projection, Irani & Peleg
    1991): the coarse view of a decoded image is then the sampled one, whatever the decoder adds. Ten rounds:
    after the adversarial fine-tuning (``decoder_gan_losses``) three left 0.4-0.8 grey levels of error in the
    16 px view of real CT slices, ten 0.1-0.4 (the rest is the clamp to [-1, 1]); each round costs two resizes."""
    r = x.shape[-1]
    for _ in range(rounds):
        err = low - resize_tensor(x, low.shape[-1], -10.0, 10.0)
        x = x + resize_tensor(err, r)
    return x.clamp(-1.0, 1.0)


def ae_loss_terms(x: torch.Tensor, recon: torch.Tensor, mu: torch.Tensor,
                  sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(L1 reconstruction + KL_WEIGHT x KL, the L1 alone) of one autoencoder forward."""
    l1 = (recon.float() - x.float()).abs().mean()
    mu, sigma = mu.float(), sigma.float()
    kl = 0.5 * (mu.pow(2) + sigma.pow(2) - torch.log(sigma.pow(2) + 1e-12) - 1)
    return l1 + KL_WEIGHT * kl.flatten(1).sum(1).mean(), l1


def train_scheduler():
    from monai.networks.schedulers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=TIMESTEPS, prediction_type="v_prediction", **SCHEDULE)


def diffusion_loss(model: nn.Module, sched: Any, z0: torch.Tensor, y: torch.Tensor | None, null_class: int,
                   gen: torch.Generator, uncond_share: float = UNCOND_SHARE) -> torch.Tensor:
    """v-prediction MSE at uniformly drawn timesteps; ``y`` replaced by ``null_class`` for a share of images."""
    b, dev = z0.shape[0], z0.device
    noise = torch.randn(z0.shape, generator=gen, device=dev)
    t = torch.randint(0, TIMESTEPS, (b,), generator=gen, device=dev)
    if y is not None and uncond_share > 0:
        drop = torch.rand(b, generator=gen, device=dev) < uncond_share
        y = torch.where(drop, torch.full_like(y, null_class), y)
    zt = sched.add_noise(z0, noise, t)
    target = sched.get_velocity(z0, noise, t)
    pred = model(zt, t, y)
    return F.mse_loss(pred.float(), target.float())


class Denoiser(nn.Module):
    """``(z, t, y) -> v``: what DDP wraps while the denoiser trains (the frozen autoencoder stays outside)."""

    def __init__(self, ldm: LatentDiffusion):
        super().__init__()
        self.ldm = ldm

    def forward(self, z: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return self.ldm.unet(z, t, class_labels=y)


@torch.no_grad()
def sample_latents(ldm: LatentDiffusion, y: torch.Tensor | None, noise: torch.Tensor, steps: int,
                   guidance: float = 1.0, on_step: Any = None, *, eta: float = 0.0, trailing: bool = False,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """DDIM from ``noise`` to latents; ``guidance`` != 1 mixes in the unconditional prediction.

    Served with eta 0 and timesteps 999 ... 0. ``eta`` > 0 (noise drawn from ``generator``) and ``trailing``
    (timesteps 999 ... 1000/steps - 1, then the clean image; Lin et al. 2024) are the variants measured in
    docs/BENCHMARKS.md (``bench/bench_probe.py --eta / --trailing``): both made worse samples here.
    """
    from monai.networks.schedulers import DDIMScheduler

    sched = DDIMScheduler(num_train_timesteps=TIMESTEPS, prediction_type="v_prediction", clip_sample=False,
                          steps_offset=TIMESTEPS // steps - 1 if trailing else 0, **SCHEDULE)
    sched.set_timesteps(steps)
    z = noise
    guided = y is not None and guidance != 1.0
    for t in sched.timesteps:
        tt = torch.full((z.shape[0],), int(t), device=z.device, dtype=torch.long)
        if guided:
            null = torch.full_like(y, ldm.null_class)
            v_c, v_u = ldm.denoise(torch.cat([z, z]), torch.cat([tt, tt]), torch.cat([y, null])).chunk(2)
            v = v_u + guidance * (v_c - v_u)
        else:
            v = ldm.denoise(z, tt, y)
        z, _ = sched.step(v.float(), int(t), z, eta, generator)
        if on_step is not None:
            on_step()
    return z


@torch.no_grad()
def latent_scale_of(ldm: LatentDiffusion, x_uint8: torch.Tensor, n: int = 512, batch: int = 128) -> float:
    """Standard deviation of the encoder's latents over (up to) ``n`` evenly spaced training images."""
    return float(_raw_latents(ldm, x_uint8, torch.arange(len(x_uint8)), n, batch).std())


@torch.no_grad()
def class_stats_of(ldm: LatentDiffusion, x_uint8: torch.Tensor, y: torch.Tensor,
                   n: int = 512, batch: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, standard deviation) of the encoder's latents per class, over (up to) ``n`` evenly spaced training
    images of each class; a class without images keeps (0, 1)."""
    shift, scale = torch.zeros(ldm.spec.num_classes), torch.ones(ldm.spec.num_classes)
    for c in range(ldm.spec.num_classes):
        members = torch.nonzero(y.cpu() == c).flatten()
        if len(members) < 2:
            continue
        z = _raw_latents(ldm, x_uint8, members, n, batch)
        shift[c], scale[c] = z.mean(), z.std().clamp_min(1e-3)
    return shift, scale


def _raw_latents(ldm: LatentDiffusion, x_uint8: torch.Tensor, members: torch.Tensor, n: int,
                 batch: int) -> torch.Tensor:
    """Raw latents (float32, on the CPU) of (up to) ``n`` evenly spaced images among ``members`` (indices)."""
    idx = members[torch.linspace(0, len(members) - 1, min(n, len(members))).long()]
    dev = ldm.latent_scale.device
    return torch.cat([ldm.raw_encode(to_unit_tensor(x_uint8[idx[i : i + batch]]).to(dev)).float().cpu()
                      for i in range(0, len(idx), batch)])


@torch.no_grad()
def encode_all(ldm: LatentDiffusion, x_uint8: torch.Tensor, y: torch.Tensor | None = None,
               batch: int = 256) -> torch.Tensor:
    """Unit-scale latents of every training image (float32, on the model's device); ``y``: their classes."""
    dev = ldm.latent_scale.device
    return torch.cat([ldm.encode(to_unit_tensor(x_uint8[i : i + batch]).to(dev),
                                 None if y is None else y[i : i + batch].to(dev)).float()
                      for i in range(0, len(x_uint8), batch)])


class DiffusionSampler(SamplerBase):
    """A trained latent diffusion model behind the ImageGenerator protocol.

    Same seed -> same images (initial noise from a ``torch.Generator`` seeded with ``seed``, DDIM
    with eta 0). ``truncation`` < 1 scales the initial noise towards 0 (lower temperature).
    A progress bar with the sampler's steps shows when a call makes more than one chunk.
    """

    def __init__(self, model: LatentDiffusion, classes: Sequence[str] = (), bf16: bool = False,
                 device: str | torch.device = "cpu", steps: int | None = None, guidance: float | None = None):
        self.net = model.eval().to(device)
        self.spec: DiffusionSpec = model.spec
        self.resolution = self.spec.resolution
        self.classes = list(classes) if self.spec.num_classes else []
        self.bf16 = bf16
        self.device = torch.device(device)
        self.steps = int(steps or self.spec.sample_steps)
        self.guidance = float(self.spec.guidance if guidance is None else guidance)
        if not 1 <= self.steps <= TIMESTEPS:
            raise ConfigError(f"sample steps: must be in 1..{TIMESTEPS}, got {self.steps}")

    @torch.no_grad()
    def generate(self, n: int, seed: int, labels: Sequence[int] | np.ndarray | None = None,
                 truncation: float = 1.0) -> np.ndarray:
        """``n`` float32 images [n, 1, R, R] in [-1, 1]."""
        from medsynth.progress import counter
        from medsynth.training.sampler import CHUNK, check_request

        check_request(n, truncation)
        n = int(n)
        y = self.check_labels(n, labels)
        s = self.spec
        gen = torch.Generator().manual_seed(int(seed))
        noise = torch.randn(n, s.latent_depth, s.latent_side, s.latent_side, generator=gen) * truncation
        chunks = range(0, n, CHUNK)
        per_step = 2 if y is not None and self.guidance != 1.0 else 1  # network evaluations per DDIM step
        out = []
        with counter(len(chunks) * self.steps * per_step, desc=f"sampling ({self.steps} DDIM steps)",
                     unit="eval") if len(chunks) > 1 else nullcontext() as bar:
            for i in chunks:
                zb = noise[i : i + CHUNK].to(self.device)
                yb = y[i : i + CHUNK].to(self.device) if y is not None else None
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                    z = sample_latents(self.net, yb, zb, self.steps, self.guidance,
                                       on_step=(lambda: bar.update(per_step)) if bar is not None else None)
                    out.append(self.net.decode(z, yb).float().clamp_(-1, 1).cpu())
        return torch.cat(out).numpy()

    @torch.no_grad()
    def interpolate(self, seed_a: int, seed_b: int, steps: int, label: int | None = None,
                    truncation: float = 1.0) -> np.ndarray:
        """``steps`` images along a spherical path between the initial noises of two seeds.

        DDIM with eta 0 maps noise to image deterministically, so the end points are exactly
        ``generate(1, seed_a)`` and ``generate(1, seed_b)`` and the path between them is smooth.
        """
        from medsynth.training.sampler import check_request, slerp

        check_request(steps, truncation)
        s = self.spec
        shape = (1, s.latent_depth, s.latent_side, s.latent_side)
        za, zb = (torch.randn(*shape, generator=torch.Generator().manual_seed(int(k)))[0] for k in (seed_a, seed_b))
        noise = slerp(za, zb, int(steps)) * truncation
        y = None if label is None else self.check_labels(int(steps), np.full(int(steps), int(label)))
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            z = sample_latents(self.net, None if y is None else y.to(self.device), noise.to(self.device),
                               self.steps, self.guidance)
            return self.net.decode(z, None if y is None else y.to(self.device)).float().clamp_(-1, 1).cpu().numpy()


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
