"""The model kinds (``train.model``), looked up by name, and the networks a GAN spec builds.

A new kind is a row of :data:`KINDS`; its family picks the trainer (``make_trainer`` in
training/trainer.py) and the sampler that loads it (training/loading.py)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from medsynth.errors import ConfigError
from medsynth.training.models import Discriminator, Generator, ModelSpec, check_arch, layout
from medsynth.training.resnet import ResDiscriminator, ResGenerator


@dataclass(frozen=True)
class ModelKind:
    name: str
    conditional: bool
    description: str
    family: str = "gan"  # gan (training/trainer.py) | diffusion (training/diffusion_trainer.py)


KINDS: dict[str, ModelKind] = {
    "dcgan": ModelKind("dcgan", False, "DCGAN (Radford et al. 2016), unconditional"),
    "cgan": ModelKind("cgan", True, "conditional DCGAN: label embedding into G, projection discriminator"),
    "ldm": ModelKind("ldm", True, "class-conditional latent diffusion (MONAI autoencoder + UNet, DDIM sampling)",
                     family="diffusion"),
}


def get_kind(name: str) -> ModelKind:
    """The model kind called ``name``.

    Raises:
        ConfigError: unknown name (the message lists the valid ones).
    """
    try:
        return KINDS[name]
    except KeyError:
        raise ConfigError(f"train.model: unknown model {name!r}; valid: {', '.join(sorted(KINDS))}") from None


def build_models(spec: ModelSpec) -> tuple[nn.Module, nn.Module]:
    """G and D for a :class:`~medsynth.training.models.ModelSpec` (checks kind and resolution)."""
    kind = get_kind(spec.kind)
    layout(spec.resolution)
    if kind.conditional and spec.num_classes < 1:
        raise ConfigError(f"{spec.kind}: a conditional model needs at least one class")
    if not kind.conditional and spec.num_classes:
        raise ConfigError(f"{spec.kind}: an unconditional model takes no classes")
    return build_generator(spec), build_discriminator(spec)


def build_generator(spec: ModelSpec) -> nn.Module:
    """The generator network a spec describes (DCGAN or residual), freshly initialised."""
    check_arch(spec.arch)
    if spec.arch == "resnet":
        return ResGenerator(spec)
    return Generator(spec)


def build_discriminator(spec: ModelSpec) -> nn.Module:
    check_arch(spec.arch)
    if spec.arch == "resnet":
        return ResDiscriminator(spec)
    return Discriminator(spec)
