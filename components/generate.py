"""Generate a synthetic dataset from a trained generator (``medsynth generate``).

1. Resolve the model: a model URI, a ``generator.pt`` path, ``zoo:<dataset>`` (a shipped
   champion, sha256-checked), or by default the registered champion of ``ingest.dataset`` and,
   when there is none, that dataset's shipped champion.
2. Pick the precision from the machine (``auto``: bf16 on CUDA or an AMX CPU, fp32 elsewhere).
3. Generate ``n`` images (one class, or every class in turn) from one seed.
4. Write them as an ``.npz``, PNGs or DICOMs, every one marked SYNTHETIC, plus a manifest, atomically:
   a failure leaves no half-written dataset behind.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medsynth import __version__
from medsynth.errors import InputError
from medsynth.project import ProjectConfig

MAX_N = 10_000


@dataclass(frozen=True)
class GenerateRequest:
    n: int
    seed: int = 0
    class_name: str | None = None
    truncation: float = 1.0
    fmt: str | None = None  # npz | png | dicom; None: from the output name
    band: bool = True  # PNG: visible SYNTHETIC band under the image
    model_uri: str | None = None


@dataclass(frozen=True)
class GenerateResult:
    out: Path
    manifest: Path
    n: int
    resolution: int
    fmt: str
    model: str
    precision: str
    classes_desc: str


def check_request(req: GenerateRequest, out: str | os.PathLike) -> str:
    """The output format; raises InputError (one line) on any bad argument."""
    if not 1 <= req.n <= MAX_N:
        raise InputError(f"--n: must be in 1..{MAX_N}, got {req.n}")
    if not 0 <= req.seed < 2**63:
        raise InputError(f"--seed: must be in 0..{2**63 - 1}, got {req.seed}")
    if not 0.0 < req.truncation <= 1.0:
        raise InputError(f"--truncation: must be in (0, 1], got {req.truncation}")
    out = Path(out)
    fmt = req.fmt or ("npz" if out.suffix.lower() == ".npz" else "png")
    if fmt == "npz" and out.suffix.lower() != ".npz":
        raise InputError(f"{out}: an npz output must end in .npz")
    if fmt != "npz" and out.suffix.lower() == ".npz":
        raise InputError(f"{out}: --format {fmt} writes a folder; give a folder name, not .npz")
    if out.exists() and (out.is_file() or any(out.iterdir())):
        raise InputError(f"{out}: already exists and is not empty; choose a new output (nothing was overwritten)")
    if not out.parent.exists():
        raise InputError(f"{out.parent}: no such folder")
    return fmt


def default_model_uri(project: ProjectConfig, dataset: str) -> str:
    """``models:/<name>@champion`` of the dataset's registered champion, else ``zoo:<dataset>``."""
    try:
        from mlflow.tracking import MlflowClient

        from medsynth.tracking import setup_mlflow

        setup_mlflow(project)
        c = MlflowClient()
        for m in c.search_registered_models(max_results=200):
            if not m.name.startswith(f"medsynth-{dataset}-"):
                continue
            try:
                c.get_model_version_by_alias(m.name, "champion")
                return f"models:/{m.name}@champion"
            except Exception:  # noqa: BLE001,S112 - no champion alias on this model
                continue
    except Exception:  # noqa: BLE001 - no registry reachable: fall back to the shipped model
        pass
    return f"zoo:{dataset}"


def generate_dataset(project: ProjectConfig, params: dict, overrides: dict[str, str], req: GenerateRequest,
                     out: str | os.PathLike) -> GenerateResult:
    """Steps 1-4 of the module docstring. Raises InputError/RegistryError/TrainingError (one line)."""
    from medsynth.components.ingest import IngestConfig
    from medsynth.config import load_stage
    from medsynth.training.loading import load_generator
    from medsynth.training.train_config import Precision, resolve_precision

    fmt = check_request(req, out)
    out = Path(out)
    dataset = load_stage(IngestConfig, "ingest", params, overrides).dataset
    uri = req.model_uri or default_model_uri(project, dataset)
    import torch

    precision = resolve_precision(Precision.AUTO, "cuda" if torch.cuda.is_available() else "cpu")
    gen = load_generator(uri, project, bf16=precision is Precision.BF16)  # weights only, hash-checked
    labels = None
    if gen.classes:
        labels = (np.full(req.n, gen.label_index(req.class_name)) if req.class_name
                  else np.arange(req.n) % len(gen.classes))
    elif req.class_name:
        raise InputError(f"--class: {uri} is unconditional (no classes); leave --class out")
    images = gen.generate(req.n, req.seed, labels, truncation=req.truncation)
    from medsynth.imaging import uint8_frames

    pixels = uint8_frames(images)
    names = [gen.classes[i] for i in labels] if labels is not None else ["unconditional"] * req.n
    manifest = {"synthetic": True, "software": f"medsynth {__version__}", "model": uri, "seed": req.seed,
                "n": req.n, "resolution": int(pixels.shape[-1]), "classes": list(gen.classes),
                "class": req.class_name, "truncation": req.truncation, "precision": precision.value, "format": fmt,
                "model_spec": gen.spec.to_dict(),
                "created_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "note": "SYNTHETIC images generated by a GAN; not real patient images, not for diagnosis"}
    if fmt == "npz":
        man_path = _write_npz(out, pixels, labels, gen.classes, manifest)
    else:
        man_path = _write_folder(out, pixels, labels, names, gen, uri, req, fmt, precision.value, manifest)
    desc = f"class {req.class_name}" if req.class_name else (f"{len(gen.classes)} classes" if gen.classes
                                                             else "unconditional")
    return GenerateResult(out, man_path, req.n, int(pixels.shape[-1]), fmt, uri, precision.value, desc)


def _write_npz(out: Path, pixels: np.ndarray, labels: np.ndarray | None, classes: list[str],
               manifest: dict) -> Path:
    from medsynth.fileio import atomic_path

    lab = labels.astype(np.int64) if labels is not None else np.full(len(pixels), -1, dtype=np.int64)
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, images=pixels, labels=lab, classes=np.array(classes, dtype=str),
                                synthetic=np.array(True), manifest=np.array(json.dumps(manifest)))
    man = out.with_name(out.name[:-4] + ".manifest.json")
    with atomic_path(man) as tmp:
        Path(tmp).write_text(json.dumps(manifest, indent=2) + "\n")
    return man


def _write_folder(out: Path, pixels: np.ndarray, labels: np.ndarray | None, names: list[str], gen: Any, uri: str,
                  req: GenerateRequest, fmt: str, precision: str, manifest: dict) -> Path:
    from pydicom.uid import generate_uid

    from medsynth.export import GenerationRecord, burn_in, dicom_bytes, file_stem, png_bytes

    record = GenerationRecord(model_name=uri, model_version="", seed=req.seed,
                              labels=[int(v) for v in labels] if labels is not None else [],
                              label_names=names, truncation=req.truncation, count=req.n,
                              resolution=int(pixels.shape[-1]), precision=precision)
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    study, series = generate_uid(), generate_uid()
    files = []
    for i, img in enumerate(pixels):
        stem = file_stem(record, i)
        if fmt == "png":
            data, name = png_bytes(burn_in(img) if req.band else img, record, i), f"{stem}.png"
        else:
            data, name = dicom_bytes(img, record, i, study, series), f"{stem}.dcm"
        (tmp / name).write_bytes(data)
        files.append({"file": name, "label": names[i]})
    (tmp / "manifest.json").write_text(json.dumps({**manifest, "band": req.band, "files": files}, indent=2) + "\n")
    if out.exists():
        out.rmdir()  # checked empty above
    os.replace(tmp, out)
    return out / "manifest.json"
