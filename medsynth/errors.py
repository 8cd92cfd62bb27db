"""Errors that the CLI turns into one clear line and a non-zero exit.

Every message names what failed, which file (when there is one) and why, e.g.
``data/x.npz: not a valid .npz archive (bad zip header)``.
"""

from __future__ import annotations


class MedsynthError(Exception):
    """Base class: the message is shown to the user as it is, on one line."""

    exit_code = 2


class ConfigError(MedsynthError):
    """params.yaml or a CLI override is wrong."""


class InputError(MedsynthError):
    """An input file or folder cannot be used (corrupt, wrong shape, unknown format, ...)."""


class ValidationFailed(MedsynthError):
    """Too many records failed validation (the run as a whole is rejected)."""

    exit_code = 3


class TrainingError(MedsynthError):
    """Training cannot start or had to stop (divergence, bad checkpoint, ...)."""


class RegistryError(MedsynthError):
    """The MLflow tracking server or model registry cannot be used."""
