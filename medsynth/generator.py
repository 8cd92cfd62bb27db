"""The contract between training, evaluation, the app and the monitor: something that makes images.

Anything with this shape can be evaluated, gated, served and monitored: a trained DCGAN/cGAN
(loaded by :func:`load_generator` from a file, a shipped champion or an MLflow model URI), or, in
tests and as a reference point, a "generator" that returns held-out real images.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    pass

GENERATOR_FILE = "generator.pt"  # what training writes (medsynth.training.sampler.generator_payload)


@runtime_checkable
class ImageGenerator(Protocol):
    """Makes ``n`` float32 images ``[n, 1, R, R]`` in [-1, 1] from a seed (same seed, same images).

    ``classes`` is empty for unconditional models; for conditional ones ``labels`` (length ``n``,
    each in ``0..len(classes)-1``) picks the class of each image.
    """

    resolution: int
    classes: list[str]

    def generate(
        self,
        n: int,
        seed: int,
        labels: Sequence[int] | np.ndarray | None = None,
        truncation: float = 1.0,
    ) -> np.ndarray: ...


def source_run_id(client: Any, uri: str) -> str:
    """The training run behind a model URI: ``runs:/<id>/...``, ``models:/<name>@<alias>``,
    ``models:/<name>/<version>`` or an MLflow 3 logged-model id ``models:/m-...``.

    Raises:
        InputError: another kind of URI, or one that resolves to nothing.
    """
    from medsynth.errors import InputError

    if uri.startswith("runs:/"):
        run_id = uri[len("runs:/"):].split("/", 1)[0]
        if run_id:
            return run_id
    elif uri.startswith("models:/"):
        rest = uri[len("models:/"):].strip("/")
        if "@" in rest:
            name, alias = rest.split("@", 1)
            mv = client.get_model_version_by_alias(name, alias)
        elif "/" in rest:
            name, version = rest.rsplit("/", 1)
            mv = client.get_model_version(name, version)
        else:  # a logged model id (what log_model returns in MLflow 3)
            return client.get_logged_model(rest).source_run_id
        if mv.run_id:
            return mv.run_id
        if str(mv.source or "").startswith("models:/"):
            return client.get_logged_model(str(mv.source)[len("models:/"):].strip("/")).source_run_id
    raise InputError(f"{uri}: not a model URI medsynth can verify (runs:/<run_id>/generator, models:/<name>@<alias>, "
                     "models:/<name>/<version>); for a local file give the generator.pt path")


def verified_generator_file(uri: str) -> Path:
    """Download the generator of ``uri`` and check it against the sha256 recorded when it was logged.

    Only bytes are fetched and hashed: no file of the model is imported or executed. The sha256 is
    a run tag (:data:`medsynth.registry.GENERATOR_SHA256`) in the tracking database, out of reach
    of whoever can write to the artifact store.

    Raises:
        RegistryError: the URI cannot be resolved or downloaded.
        InputError: no recorded sha256, no generator.pt, or a file that differs from the recorded one.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    from medsynth.errors import InputError, MedsynthError, RegistryError
    from medsynth.fileio import sha256_file
    from medsynth.registry import GENERATOR_SHA256

    client = MlflowClient()
    try:
        run_id = source_run_id(client, uri)
        expected = client.get_run(run_id).data.tags.get(GENERATOR_SHA256)
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except MedsynthError:
        raise
    except Exception as exc:  # noqa: BLE001 - MLflow raises many types for a bad URI or a dead store
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise RegistryError(f"{uri}: cannot be resolved or downloaded ({first})") from None
    path = local if local.is_file() else next(iter(sorted(local.rglob(GENERATOR_FILE))), None)
    if path is None:
        raise InputError(f"{uri}: no {GENERATOR_FILE} in the model's files (was it logged by `medsynth train`?)")
    if not expected:
        raise InputError(f"{uri}: its training run {run_id} records no {GENERATOR_SHA256} (logged before weights were "
                         "verified): retrain it, or load a checked file with --generator generator.pt")
    got = sha256_file(path)
    if got != expected:
        raise InputError(f"{uri}: {GENERATOR_FILE} has sha256 {got[:12]}..., the training run {run_id} recorded "
                         f"{expected[:12]}...: the stored file was changed after training; refusing to load it")
    return path
