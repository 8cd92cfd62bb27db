"""Rebuild the bundled class-balanced subsets from the full sets in ../shared/datasets.

Deterministic (numpy default_rng(0)); run from the repository root: python data/make_subsets.py
"""
import json
import os
import shutil

import numpy as np

src = "../shared/datasets"
rng = np.random.default_rng(0)
plan = {  # per class counts: train, val, test
    "mednist_ct": (2000, 250, 250),
    "mednist_breastmri": (1500, 200, 200),
    "mednist_cxr": (1500, 200, 200),
}
out = {}
for name, counts in plan.items():
    d = np.load(f"{src}/{name}.npz")
    arrays = {}
    for split, n in zip(("train", "val", "test"), counts, strict=True):
        x, y = d[f"{split}_images"], d[f"{split}_labels"]
        idx = []
        for c in np.unique(y[:, 0]):
            ci = np.flatnonzero(y[:, 0] == c)
            idx.extend(sorted(rng.choice(ci, size=min(n, len(ci)), replace=False)))
        idx = np.array(sorted(idx))
        arrays[f"{split}_images"] = x[idx]
        arrays[f"{split}_labels"] = y[idx]
        arrays[f"{split}_source_index"] = idx.astype(np.int32)
    np.savez_compressed(f"data/{name}_small.npz", **arrays)
    out[name] = {k: list(v.shape) for k, v in arrays.items() if k.endswith("images")}
shutil.copy(f"{src}/pneumoniamnist.npz", "data/pneumoniamnist.npz")
os.makedirs("data/dicom_samples", exist_ok=True)
for f in os.listdir(f"{src}/dicom_samples"):
    shutil.copy(f"{src}/dicom_samples/{f}", f"data/dicom_samples/{f}")
print(json.dumps(out, indent=1))
