"""How much of the exposure movement to project out of the domain embedding (``features.exposure_energy``).

For each energy share, the projection is refitted on the bench extractor (bench/out/judge/, trained by
bench/judge_families.py) from 1,500 real training images of ``--dataset``, and each change of the val split is
scored as its per-class coarse-view (16 px) FID-domain over the real floor (a training sample of the same size):
a harmless +-5 % gain should fall towards 1, the damaging changes should stay far above 2.5.

    .venv/bin/python bench/judge_exposure.py --dataset ct --energies 0,0.95,0.99,0.995
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ct")
    ap.add_argument("--energies", default="0,0.95,0.99")
    a = ap.parse_args()

    import torch
    from judge_families import bench_project, prepared

    from medsynth import disturb as D
    from medsynth import metrics as M
    from medsynth.config import read_params
    from medsynth.imaging import coarse_view
    from medsynth.training.judge_net import JudgeSettings, fit_exposure_projection

    data, ext = prepared(bench_project(), read_params(None), a.dataset)
    xtr, ytr = data.split("train")
    xva, yva = data.split("val")
    xte, yte = data.split("test")
    net = ext.model
    saved = net.feat_project.clone()
    x64 = lambda v: ext._resize(v).numpy()  # noqa: E731
    idx = np.sort(np.random.default_rng(1).choice(len(xtr), len(xva), replace=False))
    floor, y_floor = xtr[idx], ytr[idx]
    changes = {"val": xva, "gain5": D.brightness(xva, 5, seed=2), "noise25": D.noise(xva, 25, seed=2),
               "blur3": D.blur(xva, 3), "checker30": D.checkerboard(xva, 30, seed=2), "smudge8": D.smudge(xva, 8, seed=2)}
    fit_x = x64(xtr[np.random.default_rng(0).choice(len(xtr), min(1500, len(xtr)), replace=False)])
    for energy in (float(e) for e in a.energies.split(",")):
        if energy > 0:
            rank, left = fit_exposure_projection(net, fit_x, JudgeSettings(exposure_gain=0.05, exposure_energy=energy))
        else:
            rank, left = 0, 1.0
            net.feat_project.copy_(torch.eye(net.feature_dim))
        mod = ext.feature_module()
        f_te, f_fl = (M.extract(mod, coarse_view(x64(v), 16)) for v in (xte, floor))
        f = {k: M.extract(mod, coarse_view(x64(v), 16)) for k, v in changes.items()}
        print(f"energy {energy}: {rank} directions removed, {left:.3f} of the gain's movement left")
        for c, name in enumerate(data.classes):
            fl = M.fid_kid(f_te[yte == c], f_fl[y_floor == c], kid_subsets=2)["fid"]
            cells = " ".join(f"{k} {M.fid_kid(f_te[yte == c], v[yva == c], kid_subsets=2)['fid'] / fl:.2f}"
                             for k, v in f.items())
            print(f"  {name}: {cells}", flush=True)
    net.feat_project.copy_(saved)
    return 0


if __name__ == "__main__":
    sys.exit(main())
