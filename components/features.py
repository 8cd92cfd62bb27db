"""The domain feature extractor: a small CNN trained on every bundled dataset's classes together.

Inception weights cannot be downloaded here, so FID-domain / KID-domain / PRDC use the
penultimate layer of a classifier trained on the *real training splits* of all bundled sets
(pediatric normal/pneumonia X-ray, adult chest X-ray, abdomen/chest/head CT, breast MRI: 7
classes, params ``features.dataset`` names the ``ingest.datasets`` entry that lists them), so a
single-class dataset still gets a meaningful feature space.

1. Read each npz source's train and test splits through the shared ``ImageTransform`` at
   ``features.resolution`` (28 px MedMNIST is upsampled bilinearly, as the evaluation does).
2. Fit ``SmallCNN`` on at most ``per_class_train`` images per class (seeded).
3. Report its own test accuracy (overall, per class) on the full test splits.
4. Write ``model.pt`` (spec + state dict; loaded with ``weights_only=True``) and ``meta.json``
   (classes, aliases, accuracy, sha256 = version) atomically under
   ``<artifacts>/features/<name>/``; log both to MLflow.

``aliases`` maps every class name that ``ingest.datasets`` uses for the same source label (e.g.
``pneumonia`` in the ``pneumonia`` dataset and ``XR/PediatricPneumonia`` in ``multi``) to the
extractor's class, so conditional accuracy can be judged for any of those datasets.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medsynth.config import to_dict
from medsynth.errors import ConfigError, InputError
from medsynth.fileio import atomic_dir, sha256_bytes, sha256_file, write_json
from medsynth.project import ProjectConfig
from medsynth.readers import SourceConfig

FORMAT = "medsynth.features/1"


@dataclass(frozen=True)
class FeaturesConfig:
    """``features:`` in params.yaml."""

    dataset: str = "multi"  # ingest.datasets entry listing all bundled sources and classes
    name: str = "domain_cnn"  # folder under <artifacts>/features/
    resolution: int = 64
    per_class_train: int = 400
    epochs: int = 3
    batch_size: int = 128
    lr: float = 0.003
    feature_dim: int = 128
    width: int = 16

    def check(self) -> None:
        if self.resolution not in (28, 32, 64):
            raise ConfigError(f"features.resolution: must be 28, 32 or 64, got {self.resolution}")
        if not 2 <= self.per_class_train <= 100_000:
            raise ConfigError("features.per_class_train: must be in 2..100000")
        if not 1 <= self.epochs <= 100:
            raise ConfigError("features.epochs: must be in 1..100")
        if not 2 <= self.feature_dim <= 2048 or not 4 <= self.width <= 256:
            raise ConfigError("features.feature_dim must be in 2..2048 and features.width in 4..256")
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ConfigError(f"features.name: not a plain folder name: {self.name!r}")


@dataclass
class Extractor:
    """A loaded feature extractor: the classifier, its meta.json and the torchmetrics module."""

    root: Path
    meta: dict[str, Any]
    model: Any  # SmallCNN

    @property
    def version(self) -> str:
        return str(self.meta["sha256"])[:12]

    @property
    def backbone(self) -> str:
        return f"{self.meta['backbone']}@{self.version}"

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    def feature_module(self):  # -> medsynth.metrics.DomainFeatures
        from medsynth.metrics import DomainFeatures

        return DomainFeatures(self.model.trunk, self.model.feature_dim, int(self.meta["resolution"]))

    def class_index(self, name: str) -> int | None:
        """The extractor class a dataset class name stands for (None when unknown or ambiguous)."""
        v = self.meta.get("aliases", {}).get(name)
        return None if v is None else int(v)


def default_dir(project: ProjectConfig, cfg: FeaturesConfig) -> Path:
    return project.artifacts_path() / "features" / cfg.name


def _source_path(src: SourceConfig, data_dir: Path) -> Path:
    p = Path(src.path)
    return p if p.is_absolute() else data_dir / p


def load_split(sources: list[SourceConfig], data_dir: Path, resolution: int, split: str,
               per_class: int | None, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images float32 [N,1,R,R] in [-1,1], labels and class names of one split of npz sources."""
    from medsynth.transforms import ImageTransform

    tf = ImageTransform(resolution=resolution)
    rng = np.random.default_rng(seed)
    xs, ys, classes = [], [], []
    for src in sources:
        path = _source_path(src, data_dir)
        if path.suffix != ".npz":
            raise ConfigError(f"{path}: the feature extractor reads npz sources only (features.dataset)")
        if not path.is_file():
            raise InputError(f"{path}: no such file (set project.data_dir or MEDSYNTH_DATA_DIR)")
        try:
            with np.load(path, allow_pickle=False) as z:
                images, labels = z[f"{split}_images"], z[f"{split}_labels"].reshape(-1)
        except KeyError:
            raise InputError(f"{path}: no {split}_images/{split}_labels arrays") from None
        except Exception as exc:  # noqa: BLE001 - zip/numpy raise several types
            raise InputError(f"{path}: cannot be read ({exc})") from None
        for k, cname in enumerate(src.classes):
            idx = np.flatnonzero(labels == k)
            if per_class is not None and len(idx) > per_class:
                idx = np.sort(rng.choice(idx, per_class, replace=False))
            if cname in classes:
                raise ConfigError(f"features.dataset: class {cname!r} appears twice")
            classes.append(cname)
            xs.append(tf.batch_uint8(images[idx]))
            ys.append(np.full(len(idx), len(classes) - 1, dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys), classes


def build_aliases(sources: list[SourceConfig], datasets: dict[str, list[SourceConfig]],
                  classes: list[str]) -> dict[str, int]:
    """Every class name used for the same (file, label) in any ingest dataset -> extractor class."""
    by_label = {}
    for src in sources:
        for k, c in enumerate(src.classes):
            by_label[(Path(src.path).name, k)] = classes.index(c)
    aliases: dict[str, int] = {c: i for i, c in enumerate(classes)}
    ambiguous: set[str] = set()
    for srcs in datasets.values():
        for src in srcs:
            for k, c in enumerate(src.classes):
                target = by_label.get((Path(src.path).name, k))
                if target is None:
                    continue
                if aliases.get(c, target) != target:
                    ambiguous.add(c)
                aliases.setdefault(c, target)
    return {c: i for c, i in aliases.items() if c not in ambiguous}


def train_extractor(cfg: FeaturesConfig, datasets: dict[str, list[SourceConfig]], data_dir: Path,
                    out_dir: Path, seed: int = 0) -> dict[str, Any]:
    """Train, test and save the extractor into ``out_dir`` (atomically). Returns its meta."""
    import torch

    from medsynth.training.classifier import (
        TrainSettings,
        accuracy_auc,
        predict_proba,
        train_classifier,
    )

    if cfg.dataset not in datasets:
        raise ConfigError(f"features.dataset: unknown dataset {cfg.dataset!r}; valid: {', '.join(sorted(datasets))}")
    sources = datasets[cfg.dataset]
    t0 = time.perf_counter()
    x, y, classes = load_split(sources, data_dir, cfg.resolution, "train", cfg.per_class_train, seed)
    xt, yt, _ = load_split(sources, data_dir, cfg.resolution, "test", None, seed)
    settings = TrainSettings(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                             feature_dim=cfg.feature_dim, width=cfg.width, seed=seed)
    model, hist = train_classifier(x, y, len(classes), settings)
    probs = predict_proba(model, xt)
    acc, auc = accuracy_auc(probs, yt)
    pred = probs.argmax(1)
    per_class = {c: float((pred[yt == i] == i).mean()) for i, c in enumerate(classes) if (yt == i).any()}
    source_hashes = {Path(s.path).name: sha256_file(_source_path(s, data_dir)) for s in sources}
    meta: dict[str, Any] = {
        "format": FORMAT,
        "backbone": f"SmallCNN-w{cfg.width}-d{cfg.feature_dim}",
        "spec": model.spec(),
        "resolution": cfg.resolution,
        "classes": classes,
        "aliases": build_aliases(sources, datasets, classes),
        "test_accuracy": acc,
        "test_auc": auc,
        "test_accuracy_per_class": per_class,
        "n_train": len(x),
        "n_test": len(xt),
        "train_seconds": time.perf_counter() - t0,
        "final_loss": hist.loss[-1],
        "config": to_dict(cfg),
        "seed": seed,
        "sources": source_hashes,
        "data_hash": sha256_bytes(json.dumps(source_hashes, sort_keys=True).encode()),
    }
    with atomic_dir(out_dir) as tmp:
        torch.save({"spec": model.spec(), "state_dict": model.state_dict()}, tmp / "model.pt")
        meta["sha256"] = sha256_file(tmp / "model.pt")
        meta["version"] = meta["sha256"][:12]
        write_json(tmp / "meta.json", meta)
    return meta


def load_extractor(root: str | os.PathLike) -> Extractor:
    """Load a saved extractor, checking its sha256 against meta.json.

    Raises:
        InputError: missing, corrupt, tampered with, or not an extractor folder.
    """
    import torch

    from medsynth.training.classifier import SmallCNN

    root = Path(root)
    model_file, meta_file = root / "model.pt", root / "meta.json"
    if not model_file.is_file() or not meta_file.is_file():
        raise InputError(f"{root}: no feature extractor here (model.pt/meta.json missing; run `medsynth features`)")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{meta_file}: not valid JSON ({exc})") from None
    if meta.get("format") != FORMAT:
        raise InputError(f"{meta_file}: not a medsynth feature extractor (format {meta.get('format')!r})")
    if sha256_file(model_file) != meta.get("sha256"):
        raise InputError(f"{model_file}: sha256 does not match meta.json (modified or partly written; retrain)")
    try:
        payload = torch.load(model_file, map_location="cpu", weights_only=True)
        model = SmallCNN(**payload["spec"])
        model.load_state_dict(payload["state_dict"])
    except Exception as exc:  # noqa: BLE001 - torch/zip/key errors all mean "unusable"
        raise InputError(f"{model_file}: not a readable extractor ({str(exc).splitlines()[0][:200]})") from None
    return Extractor(root, meta, model.eval())


def run(cfg: FeaturesConfig, project: ProjectConfig, datasets: dict[str, list[SourceConfig]],
        out_dir: str | os.PathLike | None = None, track: bool = True) -> Extractor:
    """The features step: train the domain extractor, save it, log it (with its test accuracy) to MLflow."""
    out = Path(out_dir) if out_dir else default_dir(project, cfg)
    meta = train_extractor(cfg, datasets, project.data_path(), out, seed=project.seed)
    if track:
        import mlflow

        from medsynth.tracking import step_run

        with step_run(project, "features", to_dict(cfg), meta["data_hash"],
                      tags={"medsynth.extractor.sha256": meta["sha256"], "medsynth.extractor.backbone": meta["backbone"]}):
            mlflow.log_metrics({
                "test_accuracy": meta["test_accuracy"],
                "test_auc": meta["test_auc"],
                "train_seconds": meta["train_seconds"],
                "n_train": meta["n_train"],
                **{f"test_acc_{_key(c)}": v for c, v in meta["test_accuracy_per_class"].items()},
            })
            mlflow.log_artifacts(str(out), "extractor")
    return load_extractor(out)


def ensure(cfg: FeaturesConfig, project: ProjectConfig, datasets: dict[str, list[SourceConfig]],
           root: str | os.PathLike | None = None, track: bool = True) -> Extractor:
    """Load the extractor from ``root`` (default ``<artifacts>/features/<name>``); train it if absent."""
    out = Path(root) if root else default_dir(project, cfg)
    if (out / "meta.json").is_file() or (out / "model.pt").is_file():
        return load_extractor(out)
    return run(cfg, project, datasets, out, track=track)


def _key(name: str) -> str:
    """A class name as part of an MLflow metric key."""
    return "".join(ch if ch.isalnum() else "_" for ch in name).strip("_").lower()
