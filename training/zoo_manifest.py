"""The shipped champions: generators the project trained itself, one per bundled dataset.

Each entry is ``training/zoo/<dataset>/generator.pt`` (plain tensors: the ``generator_payload`` of
training/sampler.py, loaded with ``torch.load(weights_only=True)``) beside its evaluation report,
model card and gate record. ``training/zoo/MANIFEST.json`` lists every file with its sha256 and
size; a file whose hash differs is refused, so a tampered or truncated weight never loads.

``make zoo`` (``medsynth zoo train``) trains and evaluates them with one recorded command each;
``medsynth demo`` registers the shipped champion of its dataset first, so the app serves a good
model from the first minute, then gates a freshly trained challenger against it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medsynth.errors import InputError
from medsynth.generator import GENERATOR_FILE

ZOO_DIR = Path(__file__).resolve().parent / "zoo"
MANIFEST = "MANIFEST.json"


@dataclass(frozen=True)
class ZooEntry:
    dataset: str  # the params.yaml ingest.datasets key it was trained on
    path: Path  # generator.pt
    sha256: str
    size: int
    info: dict[str, Any]  # how it was made: command, model kind, steps, minutes, data hash, gate result

    @property
    def folder(self) -> Path:
        return self.path.parent


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(zoo_dir: Path | None = None) -> dict[str, Any]:
    zoo_dir = ZOO_DIR if zoo_dir is None else zoo_dir
    path = zoo_dir / MANIFEST
    if not path.is_file():
        return {"models": {}}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc.msg})") from None


def entries(zoo_dir: Path | None = None) -> dict[str, ZooEntry]:
    """Every shipped champion by dataset name (empty when none is shipped)."""
    zoo_dir = ZOO_DIR if zoo_dir is None else zoo_dir
    out = {}
    for name, m in sorted(read_manifest(zoo_dir).get("models", {}).items()):
        files = m.get("files", {})
        g = files.get(GENERATOR_FILE, {})
        out[name] = ZooEntry(name, zoo_dir / name / GENERATOR_FILE, str(g.get("sha256", "")), int(g.get("size", 0)),
                             dict(m.get("info", {})))
    return out


def get(dataset: str, zoo_dir: Path | None = None) -> ZooEntry:
    """The shipped champion for ``dataset``, its files checked against the manifest.

    Raises:
        InputError: no shipped model for this dataset, or a file whose sha256/size differs.
    """
    zoo_dir = ZOO_DIR if zoo_dir is None else zoo_dir
    found = entries(zoo_dir)
    if dataset not in found:
        valid = ", ".join(found) or "none shipped"
        raise InputError(f"zoo: no shipped generator for dataset {dataset!r}; shipped: {valid}")
    entry = found[dataset]
    verify(entry, zoo_dir)
    return entry


def verify(entry: ZooEntry, zoo_dir: Path | None = None) -> None:
    """Every file of an entry has the sha256 and size the manifest records.

    Raises:
        InputError: a file is missing or differs (names the file and what differs).
    """
    zoo_dir = ZOO_DIR if zoo_dir is None else zoo_dir
    files = read_manifest(zoo_dir)["models"][entry.dataset].get("files", {})
    for rel, want in files.items():
        path = zoo_dir / entry.dataset / rel
        if not path.is_file():
            raise InputError(f"{path}: listed in the zoo manifest but missing")
        if path.stat().st_size != int(want["size"]) or sha256_of(path) != want["sha256"]:
            raise InputError(f"{path}: sha256/size differs from {zoo_dir / MANIFEST}; the file was changed "
                             "or truncated and is not loaded")


def write_entry(dataset: str, folder: Path, info: dict[str, Any], zoo_dir: Path | None = None) -> None:
    """Record (or replace) the manifest entry of ``zoo_dir/dataset`` from the files now in it."""
    zoo_dir = ZOO_DIR if zoo_dir is None else zoo_dir
    from medsynth.fileio import atomic_path

    manifest = read_manifest(zoo_dir)
    files = {p.relative_to(folder).as_posix(): {"sha256": sha256_of(p), "size": p.stat().st_size}
             for p in sorted(folder.rglob("*")) if p.is_file()}
    manifest.setdefault("models", {})[dataset] = {"files": files, "info": info}
    manifest["total_bytes"] = sum(f["size"] for m in manifest["models"].values() for f in m["files"].values())
    with atomic_path(zoo_dir / MANIFEST) as tmp:
        Path(tmp).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def note_candidate(dataset: str, record: dict[str, Any], zoo_dir: Path | None = None) -> None:
    """Record a built candidate that did not replace the shipped entry (why, and its key metrics)."""
    zoo_dir = ZOO_DIR if zoo_dir is None else zoo_dir
    from medsynth.fileio import atomic_path

    manifest = read_manifest(zoo_dir)
    entry = manifest.setdefault("models", {}).get(dataset)
    if entry is None:
        return
    entry.setdefault("info", {})["last_candidate"] = record
    with atomic_path(zoo_dir / MANIFEST) as tmp:
        Path(tmp).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
