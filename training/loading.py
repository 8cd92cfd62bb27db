"""Loading a trained generator, weights only, from anything that names one.

:func:`load_generator` takes a ``generator.pt``, its folder, ``zoo:<dataset>`` or an MLflow model
URI; every path ends in :func:`load_sampler`, which reads the file with ``weights_only=True`` into
the installed package's networks (a GAN's :class:`~medsynth.training.sampler.GANSampler` or a latent
diffusion model's :class:`~medsynth.training.diffusion.DiffusionSampler`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from medsynth.errors import ConfigError, InputError, TrainingError
from medsynth.generator import GENERATOR_FILE, ImageGenerator, verified_generator_file
from medsynth.training.kinds import build_generator
from medsynth.training.models import ModelSpec
from medsynth.training.sampler import DIFFUSION_KINDS, GANSampler

if TYPE_CHECKING:
    from medsynth.project import ProjectConfig


def load_sampler(path: str | os.PathLike, bf16: bool = False, device: str = "cpu") -> Any:
    """Load a generator file written by training (``generator.pt``), with weights_only=True.

    A GAN's file gives a :class:`GANSampler`, a latent diffusion model's (``model_spec.kind ==
    "ldm"``) a :class:`~medsynth.training.diffusion.DiffusionSampler`.

    Raises:
        TrainingError: missing, corrupt or not a generator file.
    """
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"{path}: generator file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload["model_spec"].get("kind") in DIFFUSION_KINDS:
            from medsynth.training.diffusion import DiffusionSampler, DiffusionSpec, LatentDiffusion

            net = LatentDiffusion(DiffusionSpec.from_dict(payload["model_spec"]))
            net.load_state_dict(payload["state_dict"])
            return DiffusionSampler(net, payload.get("classes", []), bf16=bf16, device=device)
        spec = ModelSpec.from_dict(payload["model_spec"])
        net = build_generator(spec)
        net.load_state_dict(payload["state_dict"])
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch/zip/key errors all mean "not usable"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise TrainingError(f"{path}: not a readable generator file ({first})") from None
    return GANSampler(net, payload.get("classes", []), bf16=bf16, device=device)


def load_generator(ref: str | os.PathLike, project: ProjectConfig | None = None,
                   bf16: bool = False) -> ImageGenerator:
    """The one way to load a trained generator, weights only, whatever names it.

    ``ref`` is one of:

    * ``zoo:<dataset>``: a shipped champion (``training/zoo/``; sha256 and size checked against
      the manifest);
    * a ``generator.pt`` written by training, or a folder holding one (a train step's output);
    * an MLflow model URI, ``runs:/<id>/generator``, ``models:/<name>@<alias>`` or
      ``models:/<name>/<version>``: downloaded and checked against the sha256 its training run
      recorded (:func:`verified_generator_file`). ``project`` points MLflow at its store first.

    Every path ends in :func:`load_sampler` (``torch.load(weights_only=True)``
    into the installed package's networks): no stored Python is ever imported or run.

    Raises:
        InputError: unknown reference, no generator file, or a file that is not what was recorded.
        RegistryError: the URI cannot be resolved or downloaded.
    """
    text = str(ref)
    if text.startswith("zoo:"):
        from medsynth.training import zoo_manifest

        return load_sampler(zoo_manifest.get(text[len("zoo:"):]).path, bf16=bf16)
    if text.startswith(("runs:/", "models:/")):
        if project is not None:
            from medsynth.tracking import setup_mlflow

            setup_mlflow(project)
        return load_sampler(verified_generator_file(text), bf16=bf16)
    path = Path(text)
    if path.is_dir():
        path = path / GENERATOR_FILE
    if not path.is_file():
        raise InputError(f"{text}: generator file not found (give a {GENERATOR_FILE}, a folder holding one, zoo:<dataset>, "
                         "runs:/<run_id>/generator or models:/<name>@<alias>)")
    return load_sampler(path, bf16=bf16)
