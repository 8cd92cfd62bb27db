"""A trained domain feature extractor, loaded and used: the library every scorer imports.

``components/features.py`` trains and saves one (``model.pt`` + ``meta.json`` with its sha256);
this module loads it (weights only, hash-checked) and wraps it as :class:`Extractor`: the
torchmetrics feature module for FID-/KID-domain and PRDC, class probabilities with an in-domain
flag per image (``judge``), and the class aliases of every dataset.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medsynth.errors import InputError
from medsynth.fileio import sha256_file
from medsynth.imaging import from_01, resize_tensor, to_01

FORMAT = "medsynth.features/2"  # JudgeNet; /1 (SmallCNN) still loads
LEGACY_FORMATS = ("medsynth.features/1",)


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

    @property
    def has_in_domain(self) -> bool:
        """True for format-2 extractors (``JudgeNet``), which carry the out-of-domain model."""
        return hasattr(self.model, "in_domain_score")

    def judge(self, images: np.ndarray, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
        """(class probabilities ``[N, C]``, in-domain flags ``[N]`` bool) of images ``[N, 1, R, R]``
        in [-1, 1] (any resolution; resized as DomainFeatures does).

        Conditional accuracy should count an image as correct only when it is in domain *and*
        its predicted class is the requested one: a class head alone gives noise 0.99 confidence.
        Format-1 extractors have no in-domain model: every flag is True.
        """
        import torch

        probs, flags = [], []
        with torch.no_grad():
            for i in range(0, len(images), batch_size):
                x = self._resize(images[i : i + batch_size])
                self.model.eval()
                probs.append(torch.softmax(self.model(x), 1).numpy())
                if self.has_in_domain:
                    flags.append(self.model.in_domain_score(self.model.in_domain_features(x)).numpy() <= 1.0)
                else:
                    flags.append(np.ones(len(x), dtype=bool))
        if not probs:
            return np.zeros((0, len(self.classes)), np.float32), np.zeros(0, dtype=bool)
        return np.concatenate(probs), np.concatenate(flags)

    def in_domain_score(self, images: np.ndarray, batch_size: int = 512) -> np.ndarray | None:
        """Per-image out-of-domain score (<= 1.0: like held-out real images; see JudgeNet), or None
        for a format-1 extractor."""
        import torch

        if not self.has_in_domain:
            return None
        out = []
        with torch.no_grad():
            for i in range(0, len(images), batch_size):
                x = self._resize(images[i : i + batch_size])
                out.append(self.model.in_domain_score(self.model.in_domain_features(x)).double().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def _resize(self, images: np.ndarray):  # -> torch.Tensor at the extractor's resolution
        import torch

        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        r = int(self.meta["resolution"])
        if x.shape[-1] != r or x.shape[-2] != r:
            x = from_01(resize_tensor(to_01(x), r, 0.0, 1.0))
        return x


def load_extractor(root: str | os.PathLike) -> Extractor:
    """Load a saved extractor, checking its sha256 against meta.json.

    Raises:
        InputError: missing, corrupt, tampered with, or not an extractor folder.
    """
    import torch

    from medsynth.training.classifier import SmallCNN
    from medsynth.training.judge_net import JudgeNet

    root = Path(root)
    model_file, meta_file = root / "model.pt", root / "meta.json"
    if not model_file.is_file() or not meta_file.is_file():
        raise InputError(f"{root}: no feature extractor here (model.pt/meta.json missing; run `medsynth features`)")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{meta_file}: not valid JSON ({exc})") from None
    if meta.get("format") != FORMAT and meta.get("format") not in LEGACY_FORMATS:
        raise InputError(f"{meta_file}: not a medsynth feature extractor (format {meta.get('format')!r})")
    if sha256_file(model_file) != meta.get("sha256"):
        raise InputError(f"{model_file}: sha256 does not match meta.json (modified or partly written; retrain)")
    try:
        payload = torch.load(model_file, map_location="cpu", weights_only=True)
        model = (JudgeNet if meta["format"] == FORMAT else SmallCNN)(**payload["spec"])
        state = payload["state_dict"]
        if isinstance(model, JudgeNet) and "feat_project" not in state:  # saved before exposure projection
            state["feat_project"] = torch.eye(model.feature_dim)
        model.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001 - torch/zip/key errors all mean "unusable"
        raise InputError(f"{model_file}: not a readable extractor ({str(exc).splitlines()[0][:200]})") from None
    return Extractor(root, meta, model.eval())
