"""The ceiling of a latent diffusion model's latent space: its coder's reconstructions of held-out real images,
judged by the gate.

A denoiser can at best reproduce the latents of real images; decoded, those are the coder's reconstructions.
If the gate refuses them, no amount of denoiser training makes the model pass, so the coder is chosen first:

    .venv/bin/python bench/bench_coders.py --dataset ct --checkpoint artifacts/zoo/ct/train/checkpoints/last.pt

``--checkpoint`` is a ``train.model: ldm`` snapshot or served ``generator.pt`` (its coder is used; for
``autoencoder: patch`` nothing is trained and the reconstruction is exact). The real *val* split goes through
``reconstruct`` and is scored by evaluate's own ``score`` under the gate policy of params.yaml (as in
bench/judge_families.py: no FID bootstrap, C2ST on at most 1,000 images per set).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


KEYS = ("c2st_auc", "c2st_auc_32px", "c2st_auc_16px", "fid_domain_16px_ratio_to_floor", "prdc_recall_16px",
        "prdc_coverage_16px")


def load_ldm(path: str, ema: bool = False):
    """A LatentDiffusion from an ldm snapshot (``model``; ``ema``: its EMA denoiser) or a served generator.pt."""
    from medsynth.training.diffusion import DiffusionSpec, LatentDiffusion

    snap = torch.load(path, map_location="cpu", weights_only=True)
    net = LatentDiffusion(DiffusionSpec.from_dict(snap["model_spec"]))
    net.load_state_dict(snap.get("model") or snap["state_dict"])
    if ema and snap.get("ema"):
        net.unet.load_state_dict(snap["ema"]["model"])
    return net.eval(), snap


def judge(dataset: str, images, labels, label: str, kind: str, keys=KEYS, c2st_max_images: int = 1000) -> dict:
    """``images`` scored by evaluate's ``score`` under params.yaml's gate policy; the verdict printed.
    ``c2st_max_images``: 1000 (a probe) or 0 (the C2ST budget of evaluate itself, as the gate reads it)."""
    from judge_families import bench_project, prepared

    from medsynth.components.evaluate import EvaluateConfig, ImageSet, score
    from medsynth.components.gate import gate_policy, per_class
    from medsynth.config import load_stage, read_params

    params = read_params(None)
    data, ext = prepared(bench_project(), params, dataset)
    cfg = dataclasses.replace(load_stage(EvaluateConfig, "evaluate", params), bootstrap=0,
                              c2st_max_images=c2st_max_images)
    m, _ = score(cfg, ImageSet(images, labels, label, kind=kind), data, ext, seed=0, gate=gate_policy(params))
    print(f"grade: {m.get('gate_grade_reason')}")
    for k in keys:
        print(f"  {k}: {m.get(k)}" + (f"  by class {per_class(m, k)}" if per_class(m, k) else ""))
    fid, floor = per_class(m, "fid_domain_16px"), per_class(m, "fid_domain_16px_floor")
    if fid and floor:
        print("  fid_domain_16px / floor by class: " + ", ".join(f"{c} {fid[c] / floor[c]:.2f}" for c in fid if c in floor))
    for name, rec in m["gate_floors"].items():
        if not rec["passed"]:
            print(f"  refused by {name}: {rec['detail']}")
    return m


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ct")
    ap.add_argument("--checkpoint", required=True, help="an ldm checkpoints/last.pt or generator.pt")
    a = ap.parse_args()

    from judge_families import bench_project, prepared

    from medsynth.config import read_params

    net, _ = load_ldm(a.checkpoint)
    data, _ = prepared(bench_project(), read_params(None), a.dataset)
    x, y = data.split("val")
    with torch.no_grad():
        r = torch.cat([net.reconstruct(torch.from_numpy(x[i:i + 256]).float()).clamp(-1, 1)
                       for i in range(0, len(x), 256)]).numpy()
    print(f"coder {net.spec.autoencoder}: mean absolute error {np.abs(r - x).mean() * 127.5:.2f} grey levels")
    m = judge(a.dataset, r.astype(np.float32), y if data.num_classes > 1 else None, "reconstructions", "images")
    div = m["diversity_ms_ssim_generated"] / m["diversity_ms_ssim_real"]
    print(f"  diversity ratio (pair MS-SSIM generated / real): {div:.3f}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
