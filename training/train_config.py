"""``train:`` in params.yaml as one typed, frozen dataclass.

A profile (``demo``, ``smoke``, ``full``) sets the length and size of a run; any key written
explicitly (in params.yaml or with ``--set train.key=value``) wins over the profile.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Any

from medsynth.config import params_defaults
from medsynth.errors import ConfigError
from medsynth.training.augment import check_policy
from medsynth.training.losses import LossKind


class Profile(enum.StrEnum):
    CUSTOM = "custom"  # nothing preset: every value from params.yaml / defaults
    SMOKE = "smoke"  # ~20 s on 2 CPU cores: tests and CI
    DEMO = "demo"  # ~2-3 min on 2 CPU cores: `medsynth demo`
    FULL = "full"  # the pytorch/examples DCGAN settings, many epochs
    ZOO = "zoo"  # the shipped champions (`medsynth zoo build`): narrow nets, many steps, on 2 CPU cores


class Precision(enum.StrEnum):
    AUTO = "auto"  # bf16 (+ channels_last) on CUDA or a CPU with AMX, fp32 elsewhere
    FP32 = "fp32"
    BF16 = "bf16"  # autocast to bfloat16 (CPU or CUDA), fp32 master weights and losses
    FP16 = "fp16"  # CUDA only: autocast float16 with a GradScaler


class Device(enum.StrEnum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


# What each profile presets. A profile key left out (or null) in params.yaml takes the profile's
# value; one written explicitly wins. 0 means "no limit" for max_steps and max_train_images.
BASE: dict[str, int] = {"epochs": 5, "max_steps": 0, "ngf": 64, "ndf": 64, "batch_size": 64,
                        "max_train_images": 0, "sample_count": 64, "ae_steps": 1500}  # pytorch/examples sizes
PROFILES: dict[Profile, dict[str, int]] = {
    Profile.CUSTOM: {},
    Profile.SMOKE: {"epochs": 1, "max_steps": 25, "ngf": 16, "ndf": 16, "batch_size": 32,
                    "max_train_images": 800, "sample_count": 16, "ae_steps": 10},
    # demo: many small steps beat few wide ones for a 2-3 minute CPU budget at 64 px
    Profile.DEMO: {"epochs": 4, "ngf": 16, "ndf": 16, "batch_size": 32, "max_train_images": 3000,
                   "sample_count": 36, "ae_steps": 300},
    Profile.FULL: {"epochs": 25},
    # zoo: half the pytorch/examples widths (a generator of ~0.7M parameters, ~3 MB shipped) and
    # many small steps: quality per CPU minute (docs/BENCHMARKS.md, time-to-quality)
    Profile.ZOO: {"epochs": 1000, "max_steps": 3000, "ngf": 32, "ndf": 32, "batch_size": 64, "sample_count": 64,
                  "ae_steps": 800},
}


@dataclass(frozen=True)
@params_defaults("train")
class TrainConfig:
    """Training settings; every default is params.yaml `train` (nz 100, Adam 2e-4/0.5 as pytorch/examples dcgan)."""

    profile: Profile
    model: str  # a name in medsynth.training.kinds (dcgan, cgan)
    arch: str  # network family: dcgan (pytorch/examples) | resnet (training/resnet.py)
    # profile keys: None = the profile's value (see PROFILES); resolved in __post_init__
    epochs: int | None
    max_steps: int | None  # stop after this many optimiser steps in total (0: epochs decide)
    batch_size: int | None  # per process
    max_train_images: int | None  # class-balanced subset of the train split (0: all)
    nz: int
    ngf: int | None
    ndf: int | None
    embed_dim: int
    lr_g: float
    lr_d: float
    beta1: float
    beta2: float
    loss: LossKind
    spectral_norm: bool
    minibatch_std: bool  # a minibatch-standard-deviation map before D's last layer (anti-collapse)
    minibatch_std_by_class: bool  # conditional models: that spread within same-class groups
    diffaugment: list[str]  # e.g. [color, translation, cutout]
    mode_seeking: float  # MSGAN weight (Mao et al. 2019): same class, two z -> G is pushed apart; 0 = off
    ema_decay: float  # 0 turns the EMA generator off (the raw G is then served)
    precision: Precision
    channels_last: bool
    device: Device
    threads: int | None  # torch CPU threads (None: torch's default)
    seed: int | None  # None: project.seed
    max_minutes: float  # stop (checkpoint saved, generator written) after this much training; 0 = no limit
    checkpoint_every: int  # steps between resume snapshots (also at every epoch end)
    log_every: int  # steps between metric logs
    sample_count: int | None  # images in the per-epoch sample grid (fixed z)
    collapse_threshold: float  # per-class diversity ratio (fake/real) below this is flagged as collapse
    # latent diffusion (model: ldm; training/diffusion.py): autoencoder steps first, then max_steps of the denoiser
    autoencoder: str  # cascade (R/4 image + super-resolver) | kl (MONAI AutoencoderKL) | patch (space-to-depth)
    ae_steps: int | None  # profile key (kl only)
    lr_ae: float
    lr_denoiser: float
    lr_cooldown_steps: int  # the denoiser's last N steps: learning rate falling linearly to 0 (0: constant)
    ae_channels: list[int]
    unet_channels: list[int]
    sample_steps: int  # DDIM evaluations per image when generating
    guidance: float  # classifier-free guidance at sampling (1 = plain conditional)
    class_norm: bool  # conditional ldm: each class's latents standardised by its own mean / std
    decoder_steps: int  # cascade: adversarial fine-tuning steps of the super-resolver after the denoiser (0: none)
    decoder_adv_weight: float  # their patch critic's weight beside L1

    def __post_init__(self) -> None:
        preset = {**BASE, **PROFILES[Profile(self.profile)]}
        for key, value in preset.items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)  # frozen: filled once, at construction

    def check(self) -> None:
        from medsynth.training.kinds import get_kind
        from medsynth.training.models import check_arch

        kind = get_kind(self.model)
        check_arch(self.arch)
        check_policy(self.diffaugment)
        for name in ("epochs", "batch_size", "nz", "ngf", "ndf", "embed_dim", "checkpoint_every", "log_every"):
            v = getattr(self, name)
            if v < 1:
                raise ConfigError(f"train.{name}: must be >= 1, got {v}")
        if self.batch_size > 4096 or self.ngf > 1024 or self.ndf > 1024 or self.nz > 4096:
            raise ConfigError("train: batch_size <= 4096, ngf/ndf <= 1024 and nz <= 4096 are the bounds")
        if not 0 < self.sample_count <= 256:
            raise ConfigError(f"train.sample_count: must be in 1..256, got {self.sample_count}")
        if self.max_steps < 0 or self.max_train_images < 0:
            raise ConfigError("train.max_steps / train.max_train_images: must be >= 0 (0 = no limit)")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"train.ema_decay: must be in [0, 1), got {self.ema_decay}")
        if not 0.0 <= self.mode_seeking <= 10.0:
            raise ConfigError(f"train.mode_seeking: must be in [0, 10], got {self.mode_seeking}")
        if self.lr_g <= 0 or self.lr_d <= 0 or self.lr_ae <= 0 or self.lr_denoiser <= 0:
            raise ConfigError("train.lr_g / lr_d / lr_ae / lr_denoiser: must be > 0")
        if not 0 <= self.lr_cooldown_steps <= 10_000_000:
            raise ConfigError(f"train.lr_cooldown_steps: must be in 0..10000000, got {self.lr_cooldown_steps}")
        if self.lr_cooldown_steps and kind.family != "diffusion":
            raise ConfigError(f"train.lr_cooldown_steps: the denoiser's cooldown; model {self.model!r} has none (use 0)")
        if not 0 <= self.ae_steps <= 1_000_000:
            raise ConfigError(f"train.ae_steps: must be in 0..1000000, got {self.ae_steps}")
        if self.autoencoder not in ("kl", "patch", "cascade"):
            raise ConfigError(f"train.autoencoder: valid: kl, patch, cascade; got {self.autoencoder!r}")
        for name in ("ae_channels", "unet_channels"):
            ch = getattr(self, name)
            if not 2 <= len(ch) <= 4 or any(not 8 <= c <= 512 or c % 8 for c in ch):
                raise ConfigError(f"train.{name}: 2 to 4 widths, each a multiple of 8 in 8..512, got {ch}")
        if not 0.0 <= self.max_minutes <= 100_000:
            raise ConfigError(f"train.max_minutes: must be in [0, 100000] (0 = no limit), got {self.max_minutes}")
        if not 1 <= self.sample_steps <= 1000:
            raise ConfigError(f"train.sample_steps: must be in 1..1000, got {self.sample_steps}")
        if not 0.0 <= self.guidance <= 20.0:
            raise ConfigError(f"train.guidance: must be in [0, 20], got {self.guidance}")
        if not 0 <= self.decoder_steps <= 1_000_000:
            raise ConfigError(f"train.decoder_steps: must be in 0..1000000, got {self.decoder_steps}")
        if self.decoder_steps and (kind.family != "diffusion" or self.autoencoder != "cascade"):
            raise ConfigError("train.decoder_steps: the adversarial fine-tuning of the cascade's super-resolver; "
                              f"model {self.model!r} with autoencoder {self.autoencoder!r} has none (use 0)")
        if not 0.0 <= self.decoder_adv_weight <= 10.0:
            raise ConfigError(f"train.decoder_adv_weight: must be in [0, 10], got {self.decoder_adv_weight}")


def resolve_precision(precision: Precision, device_type: str, fast_bf16: bool | None = None) -> Precision:
    """``auto`` -> bf16 on CUDA or on a CPU with AMX, fp32 elsewhere (the choice is logged with the run).

    Measured on a 2-core Xeon with AMX: bf16 + channels_last trains 2.4x and generates 2.3x faster
    than fp32; on AVX2-only CPUs and on AVX-512 BF16 without AMX bfloat16 is slower
    (docs/BENCHMARKS.md).
    """
    if precision is not Precision.AUTO:
        return precision
    if device_type == "cuda":
        return Precision.BF16
    if fast_bf16 is None:
        from medsynth.hardware import cpu_has_fast_bf16

        fast_bf16 = cpu_has_fast_bf16()
    return Precision.BF16 if fast_bf16 else Precision.FP32


def load_train_config(params: dict[str, Any], overrides: dict[str, str] | None = None) -> TrainConfig:
    """Read ``train:`` into a :class:`TrainConfig` (same as ``load_stage(TrainConfig, "train", ...)``)."""
    from medsynth.config import load_stage

    return load_stage(TrainConfig, "train", params, overrides)


def replace(cfg: TrainConfig, **changes: Any) -> TrainConfig:
    new = dataclasses.replace(cfg, **changes)
    new.check()
    return new
