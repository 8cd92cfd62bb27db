"""Full resume snapshots, written atomically and read with ``torch.load(weights_only=True)``.

A snapshot holds G, D, the EMA generator, both optimisers, the GradScaler, the RNG states of
python / numpy / torch (and CUDA), the position (epoch, step within the epoch, global step),
the model spec and the data fingerprint (resolution, classes) it was trained on. Writing goes to a
temporary file that is renamed over ``last.pt``, so a crash mid-write never damages the previous
snapshot.
"""

from __future__ import annotations

import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medsynth.errors import TrainingError
from medsynth.fileio import atomic_path

LAST = "last.pt"
FORMAT = 1


def rng_state() -> dict[str, Any]:
    """Every RNG that training touches; numpy's as plain arrays so weights_only loading works."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": list(_py_state_to_list(random.getstate())),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_py_state_from_list(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _py_state_to_list(st: tuple) -> list:
    version, internal, gauss = st
    return [version, torch.tensor(internal, dtype=torch.int64), gauss]


def _py_state_from_list(lst: list) -> tuple:
    version, internal, gauss = lst
    return (int(version), tuple(int(v) for v in internal.tolist()), gauss)


def save(path: str | os.PathLike, snapshot: dict[str, Any]) -> Path:
    """Write ``snapshot`` atomically to ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **snapshot}, tmp)
    return path


def load(path: str | os.PathLike) -> dict[str, Any]:
    """Read a snapshot (tensors and plain containers only).

    Raises:
        TrainingError: the file is missing, truncated, or not a medsynth checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"{path}: checkpoint not found")
    try:
        snap = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise TrainingError(f"{path}: corrupt or unreadable checkpoint ({first}); "
                            "it was left in place, move it away to start fresh") from None
    if not isinstance(snap, dict) or snap.get("format") != FORMAT or "model_spec" not in snap:
        raise TrainingError(f"{path}: not a medsynth training checkpoint (format {FORMAT})")
    return snap


def check_compatible(path: Path, snap: dict[str, Any], spec: dict[str, Any], data: dict[str, Any],
                     defaults: dict[str, Any] | None = None) -> None:
    """Refuse to resume a checkpoint made for another model or another prepared dataset.

    Raises:
        TrainingError: one line naming what differs.
    """
    old_data = snap.get("data", {})
    for key in ("resolution", "classes"):
        if old_data.get(key) != data.get(key):
            raise TrainingError(
                f"{path}: checkpoint was trained on {key}={old_data.get(key)!r} but the prepared data has "
                f"{key}={data.get(key)!r}; use another --out folder or move the checkpoint away"
            )
    if defaults is None:
        from medsynth.training.models import ModelSpec

        defaults = ModelSpec().to_dict()
    # a field added to the spec after the checkpoint was written takes its default (what that code did)
    old = {**defaults, **snap["model_spec"]}
    diff = sorted(k for k in set(old) | set(spec) if old.get(k) != spec.get(k))
    if diff:
        k = diff[0]
        raise TrainingError(
            f"{path}: checkpoint has {k}={old.get(k)!r} but this run asks for {k}={spec.get(k)!r}; "
            "use another --out folder or move the checkpoint away"
        )
