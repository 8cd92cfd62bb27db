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


def write_prepared(out: Path, dataset: str = "ct", resolution: int = 32, per_class: int = 200,
                   eval_per_class: int = 50) -> Path:
    """A small class-balanced prepared artifact (first ``per_class`` images of each class)."""
    fname, classes, modality = SETS[dataset]
    tf = ImageTransform(resolution=resolution)
    arrays: dict[str, np.ndarray] = {}
    counts = {}
    with np.load(DATA / fname) as z:
        for split in SPLITS:
            imgs, labels = z[f"{split}_images"], z[f"{split}_labels"].reshape(-1).astype(np.int64)
            n = per_class if split == "train" else eval_per_class
            keep = np.concatenate([np.nonzero(labels == c)[0][:n] for c in range(len(classes))])
            arrays[f"{split}_x"] = to_uint8(tf.batch_uint8(imgs[keep]))
            arrays[f"{split}_y"] = labels[keep]
            arrays[f"{split}_ids"] = np.array([f"{dataset}-{split}-{i}" for i in keep])
            counts[split] = int(len(keep))
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "data.npz", **arrays)
    meta = {"resolution": resolution, "classes": classes, "modalities": [modality] * len(classes),
            "counts": counts, "stats": {}, "data_hash": f"test-{dataset}-{resolution}-{per_class}", "config": {}}
    (out / "meta.json").write_text(json.dumps(meta))
    return out
