"""The judge test (Heusel et al. 2017): do FID-domain, KID-domain and C2ST rise as real images get worse?

    .venv/bin/python bench/bench_judge.py [--datasets ct,pneumonia,mri,cxr] [--write docs/BENCHMARKS.md]
    .venv/bin/python bench/bench_judge.py --from-json bench/out/bench_judge.json --write docs/BENCHMARKS.md

1. The quality-aware domain extractor (components/features.py, params.yaml ``features:``) is
   trained once into bench/out/judge_extractor/ (its version is printed beside every figure).
2. Every bundled dataset (``ingest.datasets``: ct, pneumonia, mri, cxr) is read from data/*.npz
   through the shared ``ImageTransform`` at 64 px (the preprocess resolution; 28 px PneumoniaMNIST
   is upsampled as preprocess does).
3. The evaluation protocol of ``medsynth evaluate``: the candidate set is the held-out real *val*
   split, clean or disturbed (medsynth/disturb.py); the reference is the real test split; the floor
   is a train-split sample of the candidate's size vs the test split. Per candidate: FID-domain /
   floor, KID-domain, C2ST AUC (real train split vs candidate, medsynth/c2st.py), PRDC coverage,
   diversity ratio (MS-SSIM between random pairs, candidate / real test).
4. Disturbance table (8 disturbances x 3 strengths): each score should rise with strength. The
   gate's limits are calibrated on both sides in bench/judge_families.py (under params.yaml's policy,
   the only place they live). JSON in bench/out/bench_judge.json; with ``--write`` the "Quality
   judge" section of docs/BENCHMARKS.md (between its markers).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchdoc import machine, markers, write_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out"
START, END = markers("judge")
SECTION = "## Quality judge"
DATASETS = ("ct", "pneumonia", "mri", "cxr")

# (disturbance, three strengths, unit): Heusel et al.'s set plus checkerboard and smudge
DISTURBANCES: list[tuple[str, tuple[float, ...], str]] = [
    ("noise", (6, 13, 25), "sigma, grey levels"),
    ("blur", (1, 2, 3), "box radius, px"),
    ("rectangles", (1, 2, 3), "rectangles per image"),
    ("swirl", (0.5, 1, 2), "angle at centre, rad"),
    ("salt_pepper", (0.005, 0.02, 0.08), "share of pixels"),
    ("checkerboard", (5, 15, 30), "+-grey levels, 2 px cells"),
    ("mode_drop", (100, 30, 10), "distinct images k (fewer = stronger)"),
    ("smudge", (2, 4, 8), "displacement, px"),
]
# How the judge's designs were chosen: one-off sweeps on the same data and protocol (2 shared CPU
# cores, 2026-12-01), kept here so the table travels with the bench that checks the result.
CHOICES = [
    "### How the C2ST and the extractor were chosen (measured sweeps, same data and protocol)", "",
    "C2ST capacity, CT (real train sample of 2,000 vs the val split, 750 each way, width 16, 4 epochs): "
    "held-out AUC for clean / noise sigma 6 / sigma 13 / 3x3 blur / checkerboard +-5 / +-10.", "",
    "| detector | clean | sigma 6 | sigma 13 | blur r 1 | cb 5 | cb 10 |",
    "| --- | --- | --- | --- | --- | --- | --- |",
    "| 4x4 stride-2 stem, no normalisation | 0.47 | 0.49 | 0.60 | 0.94 | 0.49 | 0.96 |",
    "| + GroupNorm | 0.48 | 0.52 | 0.95 | 1.00 | 0.50 | 1.00 |",
    "| + high-pass residual input | 0.49 | 0.72 | 1.00 | 1.00 | 0.90 | 1.00 |",
    "| + both (**chosen**) | 0.47 | 0.85 | 1.00 | 1.00 | 1.00 | 1.00 |", "",
    "The chosen detector on the other sets (clean / sigma 6 / sigma 13 / blur r 1 / cb 5): pneumonia "
    "0.48 / 1.00 / 1.00 / 0.64 / 1.00; mri (200 val images) 0.49 / 0.51 / 0.72 / 1.00 / 0.53; cxr (200) "
    "0.45 / 0.58 / 0.99 / 1.00 / 0.54. Width 8 with 3 epochs was weaker on CT (sigma 6: 0.65, cb 5: 0.66). A "
    "stride-1 stem with GroupNorm and 8 epochs saw sigma 13 at 1.00 too but took ~80 s per call. Cost of "
    "the chosen one at 2,000 + 2,000 CT images: 15 CPU seconds in fp32, 41 with bf16 autocast on this AMX "
    "CPU (the convolutions are too small for bf16 to pay), so C2ST runs in fp32 everywhere; the same seed "
    "gives the same AUC.", "",
    "Extractor: the weakest cells of the disturbance table (FID-domain / floor, held-out real ~0.3-0.9) for "
    "the former 7-class `SmallCNN-w16-d128` (penultimate layer) vs `JudgeNet` (depth 1, chosen): pneumonia "
    "blur r 3 3.8 -> 5.2, smudge 8 px 2.7 -> 3.4, one rectangle 1.0 -> 3.8, 10 distinct images 4.1 -> 5.3; "
    "cxr one rectangle 1.8 -> 1.4; mri sigma 13 40 -> 7.0. Two convs per block (depth 2) cost twice the time "
    "and were no better once a near-silent channel's standard deviation was floored (an unfloored one had "
    "produced huge, meaningless ratios). The former extractor is reproduced by `--extractor "
    "<its folder> --no-c2st`. Its noise blind spot is in the class head: it gives sigma-25 noise a "
    "confident class; JudgeNet's in-domain flag refuses it (table above).",
]


def load_dataset(name: str, datasets: dict, resolution: int = 64) -> dict[str, np.ndarray]:
    from medsynth.components.features import load_split

    out = {}
    for split in ("train", "val", "test"):
        x, y, _ = load_split(datasets[name], REPO / "data", resolution, split, None, 0)
        out[split], out[f"{split}_y"] = x, y
    return out


def score(cand: np.ndarray, data: dict[str, Any], mod: Any, seed: int, c2st_on: bool) -> dict[str, float]:
    """The evaluate-protocol scores of one candidate set against one dataset's real splits."""
    from medsynth import metrics as M
    from medsynth.c2st import c2st

    f_c = M.extract(mod, cand)
    fid = M.fid_kid(data["f_test"], f_c, kid_subsets=50, seed=seed)
    prdc = M.prdc(data["f_test"], f_c, 5)
    div = M.pair_similarity(cand, 500, seed)["ms_ssim"]
    row = {"fid": fid["fid"], "fid_ratio": fid["fid"] / max(data["floor"]["fid"], 1e-12),
           "kid": fid["kid_mean"], "coverage": prdc["coverage"], "precision": prdc["precision"],
           "coverage_ratio": prdc["coverage"] / max(data["floor_prdc"]["coverage"], 1e-12),
           "diversity_ratio": div / data["div_real"]}
    if c2st_on:
        r = c2st(data["train"], cand, seed=seed)
        row.update(c2st_auc=r.auc, c2st_lo=r.auc_lo, c2st_hi=r.auc_hi, c2st_s=r.seconds)
    return row


def bench(names: list[str], c2st_on: bool = True, seed: int = 0, extractor_dir: str = "") -> dict[str, Any]:
    from medsynth import disturb as D
    from medsynth import metrics as M
    from medsynth.c2st import C2STSettings
    from medsynth.components import features
    from medsynth.components.ingest import IngestConfig
    from medsynth.config import load_stage, read_params
    from medsynth.training.extractor import load_extractor

    params = read_params(REPO / "params.yaml")
    datasets = load_stage(IngestConfig, "ingest", params).datasets
    f_cfg = load_stage(features.FeaturesConfig, "features", params)
    t0 = time.perf_counter()
    if extractor_dir:
        ext = load_extractor(extractor_dir)
    else:
        root = OUT / "judge_extractor"
        features.train_extractor(f_cfg, datasets, REPO / "data", root, seed=seed)
        ext = load_extractor(root)
    mod = ext.feature_module()
    res: dict[str, Any] = {
        "machine": machine(), "load": list(os.getloadavg()), "when": _dt.datetime.now().isoformat(timespec="minutes"),
        "extractor": {"backbone": ext.backbone, "version": ext.version, "test_accuracy": ext.meta["test_accuracy"],
                      "train_seconds": ext.meta["train_seconds"], "in_domain": ext.meta.get("in_domain", {}),
                      "wall_s": time.perf_counter() - t0},
        "c2st_settings": C2STSettings().to_dict(), "datasets": {}}
    for name in names:
        print(f"[{name}]", flush=True)
        data = load_dataset(name, datasets)
        val = data["val"]
        rng = np.random.default_rng(seed + 1)
        floor_x = data["train"][np.sort(rng.choice(len(data["train"]), len(val), replace=False))]
        data["f_test"] = M.extract(mod, data["test"])
        f_floor = M.extract(mod, floor_x)
        data["floor"] = M.fid_kid(data["f_test"], f_floor, kid_subsets=50, seed=seed)
        data["floor_prdc"] = M.prdc(data["f_test"], f_floor, 5)
        data["div_real"] = M.pair_similarity(data["test"], 500, seed)["ms_ssim"]
        entry: dict[str, Any] = {
            "n": {s: len(data[s]) for s in ("train", "val", "test")},
            "floor": {"fid": data["floor"]["fid"], "kid": data["floor"]["kid_mean"],
                      "coverage": data["floor_prdc"]["coverage"]},
            "clean": score(val, data, mod, seed, c2st_on), "disturbed": {}}
        for dist, strengths, _ in DISTURBANCES:
            for s in strengths:
                entry["disturbed"][f"{dist}:{s:g}"] = score(D.disturb(dist, val, s, seed=seed + 1), data, mod,
                                                            seed, c2st_on)
                print(f"  {dist} {s:g}: " + ", ".join(f"{k}={v:.3g}" for k, v in
                                                      entry["disturbed"][f"{dist}:{s:g}"].items()), flush=True)
        # conditional judge: class confidence and in-domain share on noise vs real
        probs, ok = ext.judge(val)
        nprobs, nok = ext.judge(D.noise(val, 25, seed=seed + 1))
        entry["judge"] = {"real_in_domain": float(ok.mean()), "real_max_conf": float(probs.max(1).mean()),
                          "noise25_in_domain": float(nok.mean()), "noise25_max_conf": float(nprobs.max(1).mean())}
        res["datasets"][name] = entry
    return res


def rises(values: list[float]) -> bool:
    return all(b > a for a, b in zip(values, values[1:], strict=False))


def markdown(res: dict[str, Any]) -> str:
    e = res["extractor"]
    names = list(res["datasets"])
    has_c2st = "c2st_auc" in next(iter(res["datasets"].values()))["clean"]
    lines = [SECTION, "", START,
             "Heusel et al. (2017)'s judge test on every bundled dataset: held-out real images (the *val* "
             "split), disturbed at three strengths each (`medsynth/disturb.py`), scored with the protocol of "
             "`medsynth evaluate` (reference: the real test split; floor: a train sample of the same size vs "
             "the test split). FID-domain is shown as a ratio to that floor; KID-domain raw (x1000); C2ST AUC "
             "is the classifier two-sample test (`medsynth/c2st.py`: real train split vs the candidate, "
             "held-out halves; 0.5 = indistinguishable). A good judge rises with every disturbance's strength.",
             "",
             "- command: `python bench/bench_judge.py --write docs/BENCHMARKS.md`",
             f"- machine: {res['machine']}; load average at start "
             f"{' / '.join(f'{x:.1f}' for x in res['load'])} (shared: wall times are inflated)",
             f"- measured: {res['when']}",
             f"- extractor `{e['backbone']}` (params.yaml `features:`, version = sha256 prefix), test accuracy "
             f"{e['test_accuracy']:.3f} over 7 classes, trained in {e['train_seconds']:.0f} s",
             f"- C2ST: {json.dumps({k: v for k, v in res['c2st_settings'].items() if k != 'test'})}",
             "- images per candidate (val split): " + ", ".join(
                 f"{n} {d['n']['val']}" for n, d in res["datasets"].items()), ""]
    # disturbance table: one row per (disturbance, strength), columns per dataset
    lines += ["### Disturbances: FID-domain / floor, KID-domain x1000" + (", C2ST AUC" if has_c2st else ""), "",
              "| disturbance | strength | " + " | ".join(names) + " |",
              "| --- | --- | " + " | ".join("---" for _ in names) + " |"]

    def cell(r: dict[str, float]) -> str:
        s = f"{r['fid_ratio']:.3g} / {r['kid'] * 1000:.3g}"
        return s + (f" / {r['c2st_auc']:.2f}" if "c2st_auc" in r else "")

    lines.append("| none (held-out real) | - | " + " | ".join(cell(res["datasets"][n]["clean"]) for n in names) + " |")
    monotone: dict[str, list[str]] = {}
    for dist, strengths, unit in DISTURBANCES:
        for s in strengths:
            lines.append(f"| {dist} | {s:g} ({unit}) | " + " | ".join(
                cell(res["datasets"][n]["disturbed"][f"{dist}:{s:g}"]) for n in names) + " |")
        for n in names:
            rows = [res["datasets"][n]["clean"]] + [res["datasets"][n]["disturbed"][f"{dist}:{s:g}"] for s in strengths]
            for metric in ("fid_ratio", "kid") + (("c2st_auc",) if has_c2st else ()):
                vals = [r[metric] for r in rows]
                # C2ST saturates at 1.0: "rises" there means never falls and ends above held-out real
                ok = (rises(vals) if metric != "c2st_auc"
                      else all(b >= a - 0.02 for a, b in zip(vals, vals[1:], strict=False)) and vals[-1] > vals[0] + 0.1)
                if not ok:
                    monotone.setdefault(f"{dist}/{metric}", []).append(n)
    lines += ["", "Rises with strength (from held-out real through the three strengths; C2ST: never falls by "
              "more than 0.02 and ends > 0.1 above held-out real, as it saturates at 1.0): "
              + ("**every disturbance, every dataset, every score**." if not monotone else
                 "all except " + "; ".join(f"{k} on {', '.join(v)}" for k, v in monotone.items()) + "."), ""]
    lines += ["The gate does not judge at this resolution: its floors, calibrated on both sides (changes a "
              "gate must pass and changes it must refuse), are in the next section (`bench/judge_families.py`). "
              "This table shows that each score rises with the strength of each disturbance.", ""]
    # conditional judge
    lines += ["### Out-of-domain reject (conditional accuracy)", "",
              "`Extractor.judge(images)` returns class probabilities and an in-domain flag (Mahalanobis "
              "distance of the embedding to the nearest class centre, calibrated so 99% of held-out real "
              "val images pass). Conditional accuracy should count an image only if it is in domain and of "
              "the requested class.", "",
              "| dataset | real val: in domain | real val: mean top-class prob. | noise sigma 25: in domain | "
              "noise sigma 25: mean top-class prob. |", "| --- | --- | --- | --- | --- |"]
    for n in names:
        j = res["datasets"][n]["judge"]
        lines.append(f"| {n} | {j['real_in_domain']:.3f} | {j['real_max_conf']:.3f} | {j['noise25_in_domain']:.3f} | "
                     f"{j['noise25_max_conf']:.3f} |")
    sh = e.get("in_domain", {}).get("share_in_domain", {})
    if sh:
        lines += ["", "In-domain share on the 7-class test split (from the extractor's meta.json): "
                  + ", ".join(f"{k} {v:.3f}" for k, v in sh.items()) + "."]
    lines += ["", *CHOICES]
    lines.append(END)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--no-c2st", action="store_true", help="skip the C2ST column (about 5x faster)")
    ap.add_argument("--extractor", default="", help="use this extractor folder instead of training one")
    ap.add_argument("--write", default=None, help="update this markdown file's Quality judge section")
    ap.add_argument("--from-json", default=None, help="re-render a saved bench_judge.json instead of measuring")
    args = ap.parse_args(argv)
    os.environ.setdefault("MEDSYNTH_QUIET", "1")
    if args.from_json:
        res = json.loads(Path(args.from_json).read_text())
    else:
        res = bench(args.datasets.split(","), c2st_on=not args.no_c2st, extractor_dir=args.extractor)
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "bench_judge.json").write_text(json.dumps(res, indent=2))
    text = markdown(res)
    print(text)
    if args.write:
        write_section(Path(args.write), text, "judge", SECTION)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
