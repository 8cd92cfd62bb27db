"""Test helper: write the prepared-artifact format (medsynth/prepared.py) from the bundled real
npz files, through the shared ImageTransform, without running ingest/preprocess (fast)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medsynth.prepared import SPLITS, to_uint8
from medsynth.transforms import ImageTransform

DATA = Path(__file__).resolve().parents[2] / "data"
SETS = {
    "ct": ("mednist_ct_small.npz", ["AbdomenCT", "ChestCT", "HeadCT"], "CT"),
    "pneumonia": ("pneumoniamnist.npz", ["normal", "pneumonia"], "XR"),
}


MULTI = [("mednist_ct_small.npz", ["CT/AbdomenCT", "CT/ChestCT", "CT/HeadCT"], "CT"),
         ("mednist_breastmri_small.npz", ["MR/BreastMRI"], "MR"),
         ("mednist_cxr_small.npz", ["XR/CXR"], "XR")]


def write_prepared(out: Path, dataset: str = "ct", resolution: int = 32, per_class: int = 200,
                   eval_per_class: int = 50) -> Path:
    """A small class-balanced prepared artifact (first ``per_class`` images of each class)."""
    sources = MULTI if dataset == "multi" else [SETS[dataset]]
    tf = ImageTransform(resolution=resolution)
    parts: dict[str, list[np.ndarray]] = {}
    classes: list[str] = []
    modalities: list[str] = []
    for fname, names, modality in sources:
        with np.load(DATA / fname) as z:
            for split in SPLITS:
                imgs, labels = z[f"{split}_images"], z[f"{split}_labels"].reshape(-1).astype(np.int64)
                n = per_class if split == "train" else eval_per_class
                keep = np.concatenate([np.nonzero(labels == c)[0][:n] for c in range(len(names))])
                parts.setdefault(f"{split}_x", []).append(to_uint8(tf.batch_uint8(imgs[keep])))
                parts.setdefault(f"{split}_y", []).append(labels[keep] + len(classes))
                parts.setdefault(f"{split}_ids", []).append(np.array([f"{fname}-{split}-{i}" for i in keep]))
        classes += names
        modalities += [modality] * len(names)
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    counts = {split: int(len(arrays[f"{split}_y"])) for split in SPLITS}
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "data.npz", **arrays)
    meta = {"resolution": resolution, "classes": classes, "modalities": modalities,
            "counts": counts, "stats": {}, "data_hash": f"test-{dataset}-{resolution}-{per_class}", "config": {}}
    (out / "meta.json").write_text(json.dumps(meta))
    return out
