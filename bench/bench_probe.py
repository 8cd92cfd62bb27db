"""Probe one latent diffusion snapshot mid-training: its EMA denoiser makes ``--n`` class-balanced images,
judged by evaluate's own ``score`` under the gate policy of params.yaml (as bench/judge_families.py: no FID
bootstrap, C2ST on at most 1,000 images per set); the sample grid is saved beside the snapshot.

    .venv/bin/python bench/bench_probe.py --dataset ct --checkpoint artifacts/zoo/ct/train/checkpoints/last.pt \\
        [--n 1000] [--steps 25] [--guidance 1.0]

Copy the snapshot first when its training still runs (it is replaced atomically every checkpoint_every steps).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ct")
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the model's)")
    ap.add_argument("--guidance", type=float, default=None, help="classifier-free guidance (default: the model's)")
    a = ap.parse_args()

    from judge_families import bench_project, prepared
    from PIL import Image

    from medsynth.components.evaluate import EvaluateConfig, ImageSet, score
    from medsynth.components.gate import gate_policy, per_class
    from medsynth.config import load_stage, read_params
    from medsynth.imaging import make_grid
    from medsynth.training.diffusion import DiffusionSampler, DiffusionSpec, LatentDiffusion

    snap = torch.load(a.checkpoint, map_location="cpu", weights_only=True)
    net = LatentDiffusion(DiffusionSpec.from_dict(snap["model_spec"]))
    net.load_state_dict(snap["model"])
    if snap.get("ema"):
        net.unet.load_state_dict(snap["ema"]["model"])
    params = read_params(None)
    policy = gate_policy(params)
    data, ext = prepared(bench_project(), params, a.dataset)
    gen = DiffusionSampler(net, data.classes, steps=a.steps, guidance=a.guidance)
    labels = np.arange(a.n) % data.num_classes if net.spec.num_classes else None
    t0 = time.perf_counter()
    x = gen.generate(a.n, 7, labels)
    ms = (time.perf_counter() - t0) * 1000 / a.n
    grid = Path(f"{a.checkpoint}.SYNTHETIC_step{snap['global_step']}.png")
    Image.fromarray(make_grid(x[:64])).save(grid)
    cfg = dataclasses.replace(load_stage(EvaluateConfig, "evaluate", params), bootstrap=0, c2st_max_images=1000)
    m, _ = score(cfg, ImageSet(x, labels, "probe", kind="generator"), data, ext, seed=0, gate=policy)
    print(f"step {snap['global_step']}: {ms:.1f} ms per image ({gen.steps} DDIM steps, guidance {gen.guidance}); "
          f"grid {grid}")
    print(f"grade: {m.get('gate_grade_reason')}")
    for k in ("c2st_auc", "c2st_auc_32px", "c2st_auc_16px", "fid_domain_16px_ratio_to_floor", "prdc_recall_16px",
              "prdc_coverage_16px", "cond_accuracy", "utility_cas_ratio"):
        print(f"  {k}: {m.get(k)}" + (f"  by class {per_class(m, k)}" if per_class(m, k) else ""))
    for name, rec in m["gate_floors"].items():
        if not rec["passed"]:
            print(f"  refused by {name}: {rec['detail']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
