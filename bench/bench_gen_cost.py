"""Generation cost per image of the shipped generators, side by side in one process (same machine, same load).

    .venv/bin/python bench/bench_gen_cost.py [--n 256] [--repeats 3]

Each shipped entry makes ``--n`` images ``--repeats`` times (after one warm-up call); the median wall time per
image is reported with the ratio to the fastest entry. A latent diffusion model's cost is its DDIM steps
(``sample_steps``) times one denoiser evaluation, plus the decoder.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchdoc  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()

    import os

    os.environ.setdefault("MEDSYNTH_QUIET", "1")
    from medsynth.training import zoo_manifest
    from medsynth.training.loading import load_generator

    rows = []
    for name, entry in zoo_manifest.entries().items():
        gen = load_generator(f"zoo:{name}")
        gen.generate(8, seed=0)
        times = []
        for r in range(a.repeats):
            t0 = time.perf_counter()
            gen.generate(a.n, seed=r + 1)
            times.append((time.perf_counter() - t0) * 1000 / a.n)
        rows.append((name, entry.info.get("model", "?"), statistics.median(times)))
    fastest = min(ms for *_, ms in rows)
    print(f"machine: {benchdoc.machine()}; {a.n} images x {a.repeats} repeats per entry")
    print("| entry | model | ms per image (median) | x fastest |\n| --- | --- | --- | --- |")
    for name, model, ms in rows:
        print(f"| zoo:{name} | {model} | {ms:.2f} | {ms / fastest:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
