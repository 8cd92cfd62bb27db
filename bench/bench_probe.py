"""Probe one latent diffusion snapshot mid-training: its EMA denoiser makes ``--n`` class-balanced images,
judged by evaluate's own ``score`` under the gate policy of params.yaml (as bench/judge_families.py: no FID
bootstrap, C2ST on at most 1,000 images per set); the sample grid is saved beside the snapshot.

    .venv/bin/python bench/bench_probe.py --dataset ct --checkpoint artifacts/zoo/ct/train/checkpoints/last.pt \\
        [--n 1000] [--steps 25] [--guidance 1.0] [--eta 0] [--trailing] [--gate-budget]

``--eta`` > 0 and ``--trailing`` try sampler variants the served model does not use (stochastic DDIM; timesteps
ending at 1000/steps - 1 and jumping to the clean image, Lin et al. 2024); ``--gate-budget`` runs the C2ST on every
image, as evaluate does for the gate (a probe's 1,000-image C2ST is the weaker detector).

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
    ap.add_argument("--eta", type=float, default=0.0, help="DDIM eta (0: deterministic, as served)")
    ap.add_argument("--trailing", action="store_true", help="trailing timestep spacing (not what is served)")
    ap.add_argument("--gate-budget", action="store_true", help="C2ST on all images (evaluate's budget)")
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
    if a.eta or a.trailing:
        _sampler_variant(a.eta, a.trailing)
    labels = np.arange(a.n) % data.num_classes if net.spec.num_classes else None
    t0 = time.perf_counter()
    x = gen.generate(a.n, 7, labels)
    ms = (time.perf_counter() - t0) * 1000 / a.n
    grid = Path(f"{a.checkpoint}.SYNTHETIC_step{snap.get('global_step', 0)}.png")
    Image.fromarray(make_grid(x[:64])).save(grid)
    print(f"step {snap.get('global_step')}: {ms:.1f} ms per image ({gen.steps} DDIM steps, guidance {gen.guidance}); "
          f"grid {grid}")
    variant = f", eta {a.eta:g}" * bool(a.eta) + ", trailing" * a.trailing
    print(f"sampler: {gen.steps} DDIM steps, guidance {gen.guidance}{variant}; C2ST budget "
          f"{'evaluate (the gate)' if a.gate_budget else '1,000 images (probe)'}")
    judge(a.dataset, x, labels, "probe", "generator", (*KEYS, "cond_accuracy", "utility_cas_ratio"),
          c2st_max_images=0 if a.gate_budget else 1000)
    return 0


def _sampler_variant(eta: float, trailing: bool) -> None:
    """The served DDIM loop (in this process) with ``eta`` noise and/or trailing timesteps."""
    from functools import partial

    import torch

    import medsynth.training.diffusion as D

    D.sample_latents = partial(D.sample_latents, eta=eta, trailing=trailing, generator=torch.Generator().manual_seed(11))


if __name__ == "__main__":
    sys.exit(main())
