"""What tells a shipped generator's images from real ones? Diagnostics behind "C2ST AUC 1.00".

For one zoo entry, real images (test + val splits) against as many generated ones (same labels,
8-bit as `medsynth generate` writes them), the project's C2ST (medsynth/c2st.py) is run:

1. at the working resolution, after a Gaussian blur of both sets (sigma 1 px), and after both are
   brought down to 32 and 16 px and back: if the AUC stays near 1.0 at 16 px, the tell is the
   images' large-scale content, not fine texture, noise or checkerboards;
2. on background statistics: the standard deviation of the 8x8 top-left corner and the share of
   pixels at the image's most common grey level (flat air/background in real scans);
3. after *flattening* the generated backgrounds (pixels within +-6 grey levels of the image's most
   common value, connected to the border, set to it): is the background the whole tell?
4. after *critic selection* (discriminator rejection sampling, Azadi et al. 2019, with a separate
   CNN trained on the train split vs generated images): the least "synthetic"-looking 1/K of K x n
   candidates per class. A critic that can be fooled picks degenerate images; look at the grid.

    .venv/bin/python bench/bench_tells.py --dataset ct --write docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchdoc  # noqa: E402


def blur(a: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    k = torch.exp(-torch.arange(-2, 3).float() ** 2 / (2 * sigma * sigma))
    k = k / k.sum()
    t = F.conv2d(F.pad(torch.from_numpy(a), (2, 2, 0, 0), mode="replicate"), k.view(1, 1, 1, 5))
    return F.conv2d(F.pad(t, (0, 0, 2, 2), mode="replicate"), k.view(1, 1, 5, 1)).numpy()


def down_up(a: np.ndarray, r: int) -> np.ndarray:
    t = F.interpolate(torch.from_numpy(a), size=(r, r), mode="bilinear", antialias=True)
    return F.interpolate(t, size=a.shape[-2:], mode="bilinear").numpy()


def flatten_background(im: np.ndarray, tol: int = 6) -> np.ndarray:
    """uint8 [H, W]: border-connected pixels within ``tol`` of the most common value set to it."""
    from scipy import ndimage

    mode = np.bincount(im.ravel(), minlength=256).argmax()
    near = np.abs(im.astype(int) - int(mode)) <= tol
    lbl, _ = ndimage.label(near)
    edge = np.unique(np.r_[lbl[0], lbl[-1], lbl[:, 0], lbl[:, -1]])
    out = im.copy()
    out[np.isin(lbl, edge[edge > 0])] = mode
    return out


def background(u8: np.ndarray) -> tuple[float, float]:
    """(median corner std, median share of the most common grey level) over uint8 [N, H, W]."""
    corner = np.median(u8[:, :8, :8].std((1, 2)))
    modal = np.median([np.bincount(i.ravel(), minlength=256).max() / i.size for i in u8])
    return float(corner), float(modal)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ct")
    ap.add_argument("--generator", default=None, help="default: zoo:<dataset>")
    ap.add_argument("--prepared", default=None, help="default: artifacts/zoo/<dataset>/preprocess")
    ap.add_argument("--candidates", type=int, default=16, help="K: critic selection keeps 1 in K")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="artifacts/bench_tells")
    ap.add_argument("--write", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    from PIL import Image

    from medsynth.c2st import C2STSettings, _fit, _predict, _resize, c2st, c2st_per_class
    from medsynth.imaging import make_grid, to_uint8, to_unit
    from medsynth.prepared import PreparedData
    from medsynth.training.loading import load_generator

    ref = a.generator or f"zoo:{a.dataset}"
    pd = PreparedData.load(a.prepared or f"artifacts/zoo/{a.dataset}/preprocess")
    (xt, yt), (xr, yr), (xv, yv) = pd.split("train"), pd.split("test"), pd.split("val")
    real, lab = np.concatenate([xr, xv]), np.concatenate([yr, yv])
    gen = load_generator(ref)
    cond = bool(gen.spec.num_classes)

    def make(labels: np.ndarray, seed: int) -> np.ndarray:
        out = [gen.generate(min(2000, len(labels) - i), seed=seed + i, labels=labels[i:i + 2000] if cond else None)
               for i in range(0, len(labels), 2000)]
        return to_unit(to_uint8(np.concatenate(out)))

    t0 = time.perf_counter()
    syn = make(lab, 1)
    rows: list[tuple[str, str]] = []
    for name, f in (("as made", lambda x: x), ("both blurred, sigma 1 px", blur),
                    ("both at 32 px", lambda x: down_up(x, 32)), ("both at 16 px", lambda x: down_up(x, 16))):
        rows.append((name, f"{c2st(f(real), f(syn), seed=0).auc:.3f}"))
        print(rows[-1], flush=True)
    real_u8, syn_u8 = to_uint8(real)[:, 0], to_uint8(syn)[:, 0]
    (rc, rm), (sc, sm) = background(real_u8), background(syn_u8)
    flat = to_unit(np.stack([flatten_background(i) for i in syn_u8])[:, None])
    fc, fm = background(to_uint8(flat)[:, 0])
    rows.append(("generated backgrounds flattened (+-6 grey levels, border-connected)",
                 f"{c2st(real, flat, seed=0).auc:.3f}"))
    print(rows[-1], flush=True)
    # critic selection: a separate CNN (wider, longer) on the train split vs generated images
    s_fit = make(yt if cond else np.zeros(len(xt), int), 2)
    x = torch.cat([_resize(xt, pd.resolution), _resize(s_fit, pd.resolution)])
    y = torch.cat([torch.zeros(len(xt)), torch.ones(len(s_fit))])
    critic = _fit(x, y, C2STSettings(width=32, epochs=8), False, 5)
    cand_lab = np.repeat(lab, a.candidates)
    cand = make(cand_lab, 100)
    score = _predict(critic, _resize(cand, pd.resolution), False)
    keep = np.concatenate([np.where(cand_lab == c)[0][np.argsort(score[cand_lab == c])[:int((lab == c).sum())]]
                           for c in np.unique(lab)])
    chosen, chosen_lab = cand[keep], cand_lab[keep]
    rows.append((f"critic selection, 1 in {a.candidates} (critic logits p1/p50 {np.percentile(score, 1):.1f}/"
                 f"{np.percentile(score, 50):.1f})", f"{c2st(real, chosen, seed=0).auc:.3f}"))
    print(rows[-1], flush=True)
    per_class = c2st_per_class(real, lab, chosen, chosen_lab, seed=0) if cond else {}
    out = Path(a.out) / a.dataset
    out.mkdir(parents=True, exist_ok=True)
    picks = np.concatenate([chosen[chosen_lab == c][:8] for c in np.unique(lab)])
    Image.fromarray(make_grid(picks, cols=8)).save(out / "SYNTHETIC_critic_selected.png")
    seconds = time.perf_counter() - t0
    lines = [f"Command: `.venv/bin/python bench/bench_tells.py --dataset {a.dataset} --write docs/BENCHMARKS.md`  ",
             f"Machine: {benchdoc.machine()}; generator `{ref}`; {len(real)} real (test + val) vs as many generated "
             f"images, 8-bit; {seconds / 60:.1f} min.", "",
             "| real vs generated | C2ST AUC |", "| --- | --- |", *(f"| {n} | {v} |" for n, v in rows), "",
             f"Backgrounds (median over images): top-left 8x8 corner std real {rc:.2f} grey levels, generated "
             f"{sc:.2f} (flattened {fc:.2f}); share of pixels at the image's most common grey level real {rm:.2f}, "
             f"generated {sm:.2f} (flattened {fm:.2f}).",
             *(["Critic-selected, per class: " + ", ".join(f"{pd.classes[k]} {v.auc:.3f}" for k, v in per_class.items())
                + f"; the chosen images: `{out / 'SYNTHETIC_critic_selected.png'}`."] if per_class else [])]
    if a.write:
        benchdoc.write_section(Path(a.write), "\n".join(lines), f"tells_{a.dataset}",
                               f"## What tells the generated images apart ({a.dataset})")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
