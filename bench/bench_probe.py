"""Probe one latent diffusion snapshot mid-training: its EMA denoiser makes ``--n`` class-balanced images,
judged by evaluate's own ``score`` under the gate policy of params.yaml (as bench/judge_families.py: no FID
bootstrap, C2ST on at most 1,000 images per set); the sample grid is saved beside the snapshot.

    .venv/bin/python bench/bench_probe.py --dataset ct --checkpoint artifacts/zoo/ct/train/checkpoints/last.pt \\
        [--n 1000] [--steps 25] [--guidance 1.0]

Copy the snapshot first when its training still runs (it is replaced atomically every checkpoint_every steps).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ct")
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the model's)")
    ap.add_argument("--guidance", type=float, default=None, help="classifier-free guidance (default: the model's)")
    a = ap.parse_args()

    from bench_coders import KEYS, judge, load_ldm
    from judge_families import bench_project, prepared
    from PIL import Image

    from medsynth.config import read_params
    from medsynth.imaging import make_grid
    from medsynth.training.diffusion import DiffusionSampler

    net, snap = load_ldm(a.checkpoint, ema=True)
    data, _ = prepared(bench_project(), read_params(None), a.dataset)
    gen = DiffusionSampler(net, data.classes, steps=a.steps, guidance=a.guidance)
    labels = np.arange(a.n) % data.num_classes if net.spec.num_classes else None
    t0 = time.perf_counter()
    x = gen.generate(a.n, 7, labels)
    ms = (time.perf_counter() - t0) * 1000 / a.n
    grid = Path(f"{a.checkpoint}.SYNTHETIC_step{snap.get('global_step', 0)}.png")
    Image.fromarray(make_grid(x[:64])).save(grid)
    print(f"step {snap.get('global_step')}: {ms:.1f} ms per image ({gen.steps} DDIM steps, guidance {gen.guidance}); "
          f"grid {grid}")
    judge(a.dataset, x, labels, "probe", "generator", (*KEYS, "cond_accuracy", "utility_cas_ratio"))
    return 0

if __name__ == "__main__":
    sys.exit(main())
