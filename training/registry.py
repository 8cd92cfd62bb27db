"""One registry of model kinds, looked up by name from ``train.model``."""

from __future__ import annotations

from dataclasses import dataclass

from medsynth.errors import ConfigError


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


def build_models(spec):  # -> tuple[Generator, Discriminator]
    """G and D for a :class:`~medsynth.training.models.ModelSpec` (checks kind and resolution)."""
    from medsynth.training.models import build_discriminator, build_generator, layout

    kind = get_kind(spec.kind)
    layout(spec.resolution)
    if kind.conditional and spec.num_classes < 1:
        raise ConfigError(f"{spec.kind}: a conditional model needs at least one class")
    if not kind.conditional and spec.num_classes:
        raise ConfigError(f"{spec.kind}: an unconditional model takes no classes")
    return build_generator(spec), build_discriminator(spec)
