"""Why does one class fail the gate's coarse C2ST? Per class, at the gate's 16 px view.

For each class of a bundled dataset: the real images' spread at 16 px (grey levels; the denoiser of a latent
diffusion model works at that scale), the generated images' lowest percentile beside the real one (real CT
backgrounds are flat and never darker than the air), the 3 x 3 corner's spread, and the gate's own 16 px C2ST
(`medsynth/c2st.py`, `C2STSettings().coarse(16)`) on real *train* images of that class against ``--n`` generated ones,
over ``--seeds`` detector seeds, three ways: as the gate runs it, without the high-pass residual input (what is
left is layout and brightness), and with every image standardised first (contrast hidden; what is left is the
structure relative to the image's own spread, where a low-contrast class shows its noise).

    .venv/bin/python bench/bench_class_scale.py --dataset ct --generator zoo:ct [--generator PATH ...] \\
        [--n 1000] [--seeds 3] [--write docs/BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchdoc  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def stats(a16: np.ndarray) -> dict[str, float]:
    """Spread, 1st percentile and the 3 x 3 corner's median spread of [N, 1, 16, 16] images, in grey levels."""
    from medsynth.imaging import unit_to_grey

    g = unit_to_grey(a16)
    return {"spread": float(g.std()), "p1": float(np.percentile(g, 1)),
            "corner": float(np.median(g[:, 0, :3, :3].std((1, 2))))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ct")
    ap.add_argument("--generator", action="append", required=True, help="zoo:<dataset>, a generator.pt or its folder")
    ap.add_argument("--n", type=int, default=1000, help="generated images per class")
    ap.add_argument("--seeds", type=int, default=3, help="detector seeds per C2ST")
    ap.add_argument("--write", type=Path, default=None)
    a = ap.parse_args()

    from judge_families import bench_project, prepared

    from medsynth.c2st import C2STSettings, c2st
    from medsynth.config import read_params
    from medsynth.imaging import resize_images, to_uint8, to_unit, unit_to_grey
    from medsynth.training.loading import load_generator

    t0 = time.perf_counter()
    data, _ = prepared(bench_project(), read_params(REPO / "params.yaml"), a.dataset)
    x, y = (np.asarray(v) for v in data.split("train"))
    base = C2STSettings().coarse(16)
    ways = {"gate": base, "no residual": dataclasses.replace(base, residual=False),
            "standardised": dataclasses.replace(base, standardise=True)}
    total_spread = float(unit_to_grey(resize_images(x, 16).numpy()).std())
    rows = []
    for ref in a.generator:
        gen = load_generator(ref)
        for c, name in enumerate(data.classes):
            real = x[y == c]
            fake = to_unit(to_uint8(gen.generate(a.n, seed=7, labels=np.full(a.n, c))))  # 8-bit, as written
            r, f = stats(resize_images(real, 16).numpy()), stats(resize_images(fake, 16).numpy())
            aucs = {w: [c2st(real, fake, seed=s, settings=st).auc for s in range(a.seeds)] for w, st in ways.items()}
            rows.append((ref, name, r, f, aucs))
            print(ref, name, r, f, {w: np.round(v, 3).tolist() for w, v in aucs.items()}, flush=True)
    minutes = (time.perf_counter() - t0) / 60

    def auc(v: list[float]) -> str:
        return f"{np.mean(v):.2f} ({min(v):.2f}-{max(v):.2f})"

    lines = [f"Command: `.venv/bin/python bench/bench_class_scale.py --dataset {a.dataset} "
             + " ".join(f"--generator {g}" for g in a.generator) + f" --n {a.n} --seeds {a.seeds}`  ",
             f"Machine: {benchdoc.machine()}; {a.n} generated images per class against the class's real train images; "
             f"C2ST: mean (range) over {a.seeds} detector seeds; {minutes:.1f} min. The whole set's spread at 16 px: "
             f"{total_spread:.1f} grey levels.", "",
             "| generator | class | spread at 16 px, real / generated | 1st percentile, real / generated | corner spread, "
             "real / generated | C2ST 16 px as the gate runs it | without the residual input | standardised images |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for ref, name, r, f, aucs in rows:
        lines.append(f"| {ref} | {name} | {r['spread']:.1f} / {f['spread']:.1f} | {r['p1']:.1f} / {f['p1']:.1f} | "
                     f"{r['corner']:.2f} / {f['corner']:.2f} | {auc(aucs['gate'])} | {auc(aucs['no residual'])} | "
                     f"{auc(aucs['standardised'])} |")
    if a.write:
        start, end = benchdoc.markers(f"class_scale_{a.dataset}")
        benchdoc.write_section(a.write, "\n".join([start, *lines, end]), f"class_scale_{a.dataset}",
                               f"## What tells the generated images apart at 16 px, by class ({a.dataset})")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
