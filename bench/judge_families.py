"""The gate calibrated on both sides: changes of real images a gate must pass, and ones it must refuse.

    .venv/bin/python bench/judge_families.py [--datasets pneumonia,mri,cxr,ct] [--write docs/BENCHMARKS.md]
    .venv/bin/python bench/judge_families.py --from-json bench/out/judge_families.json --write docs/BENCHMARKS.md

1. Each bundled dataset goes through ingest -> validate -> preprocess (params.yaml, untracked) into
   bench/out/judge/; the project's domain extractor is trained there once.
2. The candidate sets are the held-out real *val* split, 8-bit, with its labels:
   - **must pass** (clinically usable): as is; ``medsynth/disturb.py`` ``MILD`` (Gaussian blur 0.7 px,
     noise 5 grey levels, +-5 % contrast, +-5 % brightness, JPEG quality 75, shifts up to 2 px);
   - **must refuse**: noise 25, box blur r 3, checkerboard +-30, 10 distinct images repeated, smudge 8 px,
     near-copies (training images with 2 grey levels of noise), class ignored (labels shuffled; conditional
     datasets only).
3. Every set is scored by ``medsynth evaluate``'s own ``score`` (components/evaluate.py) under the gate
   policy of params.yaml (``gate_policy()``: the one source of every limit), so the verdict here *is* the
   gate's: its recorded floors and grade. Speed-ups that do not touch the floors: no FID bootstrap,
   C2ST on at most 1,000 images per set.
4. JSON in bench/out/judge_families.json (written after each dataset: a rerun with --from-json renders
   what finished); ``--write`` puts the table into docs/BENCHMARKS.md between its markers.
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
START, END = markers("judge_families")
SECTION = "## Quality judge: the gate calibrated on both sides"
DATASETS = ("pneumonia", "mri", "cxr", "ct")
REFUSE: list[tuple[str, str, float]] = [
    ("noise sigma 25", "noise", 25), ("box blur r 3", "blur", 3), ("checkerboard +-30", "checkerboard", 30),
    ("10 distinct images repeated", "mode_drop", 10), ("heavy smudge (8 px)", "smudge", 8),
    ("near-copies of training images", "near_copy", 2), ("class ignored (labels shuffled)", "shuffle", 0),
    ("every image 20 % darker (exposure)", "exposure", -20)]
# per row: the scores shown beside the verdict (metrics.json keys)
COLUMNS = [("C2ST 64 / 32 / 16 px", ("c2st_auc", "c2st_auc_32px", "c2st_auc_16px")),
           ("FID-domain 16 px / floor", ("fid_domain_16px_ratio_to_floor",)),
           ("recall / coverage 16 px", ("prdc_recall_16px", "prdc_coverage_16px")),
           ("diversity ratio", ("diversity_ratio",)), ("CAS ratio", ("utility_cas_ratio",))]


def families(val: np.ndarray, y: np.ndarray, train: np.ndarray, conditional: bool,
             seed: int) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """(family, label, 8-bit images in [-1, 1], labels) for every row of one dataset."""
    from medsynth import disturb as D

    q = D.quantise
    rows = [("pass", "held-out real (val split)", val, y)]
    rows += [("pass", f"{name} {s:g} ({unit})", q(D.disturb(name, val, s, seed=seed)), y) for name, s, unit in D.MILD]
    rng = np.random.default_rng(seed)
    for label, name, s in REFUSE:
        if name == "near_copy":
            idx = np.sort(rng.choice(len(train[0]), size=min(len(val), len(train[0])), replace=False))
            rows.append(("refuse", label, q(D.noise(train[0][idx], s, seed=seed)), train[1][idx]))
        elif name == "shuffle":
            if conditional:
                rows.append(("refuse", label, val, rng.permutation(y)))
        elif name == "mode_drop":
            idx = D.mode_drop(np.arange(len(val)), int(s), seed=seed)
            rows.append(("refuse", label, val[idx], y[idx]))
        else:
            rows.append(("refuse", label, q(D.disturb(name, val, s, seed=seed)), y))
    return rows


def bench_project(seed: int = 0) -> Any:
    """The untracked project under bench/out/ the judge benches prepare their data in."""
    from medsynth.project import ProjectConfig

    return ProjectConfig(artifacts_dir=str(OUT / "judge"), state_dir=str(OUT / "judge_state"), seed=seed)


def prepared(project: Any, params: dict[str, Any], name: str) -> tuple[Any, Any]:
    """(PreparedData, loaded domain extractor) of bundled dataset ``name``: ingest -> validate -> preprocess
    as params.yaml says (untracked, reused when present), the extractor trained once."""
    from medsynth.config import load_stage
    from medsynth.pipelines.zoo_build import prepare
    from medsynth.prepared import PreparedData

    ext = prepare(project, lambda cls, sec: load_stage(cls, sec, params, {"ingest.dataset": name}), name,
                  track=False, log=lambda *_: None)
    data = PreparedData.load(project.artifacts_path() / "zoo" / name / "preprocess")
    return data, ext


def bench(names: list[str], seed: int = 0, out_json: Path | None = None) -> dict[str, Any]:
    import dataclasses

    from medsynth.components.evaluate import EvaluateConfig, ImageSet, score
    from medsynth.components.gate import gate_policy
    from medsynth.config import load_stage, read_params

    params = read_params(REPO / "params.yaml")
    policy = gate_policy(params)
    project = bench_project(seed)
    cfg = dataclasses.replace(load_stage(EvaluateConfig, "evaluate", params), bootstrap=0, c2st_max_images=1000)
    res: dict[str, Any] = {"machine": machine(), "load": list(os.getloadavg()),
                           "when": _dt.datetime.now().isoformat(timespec="minutes"), "policy_sha256": policy.sha256(),
                           "policy": dataclasses.asdict(policy), "datasets": {}}
    for name in names:
        t0 = time.perf_counter()
        print(f"[{name}]", flush=True)
        data, ext = prepared(project, params, name)
        x_val, y_val = data.split("val")
        conditional = data.num_classes > 1
        rows = []
        for family, label, x, y in families(x_val, y_val, data.split("train"), conditional, seed + 1):
            s = ImageSet(x.astype(np.float32), y if conditional else None, f"bench:{label}", kind="images")
            m, _ = score(cfg, s, data, ext, seed=seed, gate=policy)
            row = {k: m[k] for k in (*[k for _, ks in COLUMNS for k in ks if k != "diversity_ratio"],
                                     "gate_grade", "gate_grade_reason", "gate_floors_passed", "utility_acc_real")
                   if k in m}
            row["diversity_ratio"] = m["diversity_ms_ssim_generated"] / m["diversity_ms_ssim_real"]
            row["failed"] = [f for f, r in m["gate_floors"].items() if not r["passed"]]
            row.update(family=family, label=label, n=len(x))
            rows.append(row)
            print(f"  {family:6s} {label:34s} {'refused: ' + ', '.join(row['failed']) if row['failed'] else 'passes'}"
                  + "  " + " ".join(f"{k}={row[k]:.2f}" for _, ks in COLUMNS for k in ks if k in row), flush=True)
        res["datasets"][name] = {"rows": rows, "classes": data.classes, "n_val": len(x_val),
                                 "seconds": time.perf_counter() - t0}
        if out_json is not None:
            out_json.parent.mkdir(parents=True, exist_ok=True)
            out_json.write_text(json.dumps(res, indent=1))
    return res


def outcome(res: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(must-pass rows that were refused, must-refuse rows that passed): both empty when calibrated."""
    wrong_refused, wrong_passed = [], []
    for n, d in res["datasets"].items():
        for r in d["rows"]:
            if r["family"] == "pass" and r["failed"]:
                wrong_refused.append(f"{n}: {r['label']} ({', '.join(r['failed'])})")
            if r["family"] == "refuse" and not r["failed"]:
                wrong_passed.append(f"{n}: {r['label']}")
    return wrong_refused, wrong_passed


def markdown(res: dict[str, Any]) -> str:
    p = res["policy"]
    wrong_refused, wrong_passed = outcome(res)
    lines = [SECTION, "", START,
             "Real held-out images (the val split, 8-bit) changed in ways that keep them clinically usable "
             "(**must pass**) or that damage them (**must refuse**), each scored by `medsynth evaluate`'s own "
             "code under the gate policy in params.yaml, so each verdict is the gate's. The floors judge at "
             "16 px (both sets brought down with antialiasing): C2ST AUC <= "
             f"{p['max_c2st_auc']}, coarse-view FID-domain <= {p['max_fid_floor_ratio']} x its real floor, "
             f"recall >= {p['min_recall']}, coverage >= {p['min_coverage']}, diversity ratio in "
             f"[{p['min_diversity_ratio']}, {p['max_diversity_ratio']}], conditional accuracy, CAS ratio >= "
             f"{p['min_cas_ratio']} (not applied when the real classifier is at >= {p['cas_ceiling']}), "
             "privacy. Full-resolution C2ST is shown beside them: it tells even the mild changes apart.", "",
             "- command: `python bench/judge_families.py --write docs/BENCHMARKS.md`",
             f"- machine: {res['machine']}; load average at start {' / '.join(f'{x:.1f}' for x in res['load'])}",
             f"- measured: {res['when']}; gate policy `{res['policy_sha256'][:12]}`; FID bootstrap off, C2ST on "
             "at most 1,000 images per set", "",
             "| dataset | family | candidate | C2ST 64 / 32 / 16 px | FID-domain 16 px / floor | recall / coverage "
             "16 px | diversity ratio | CAS ratio | verdict (grade) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]

    def f(r: dict[str, Any], k: str) -> str:
        return f"{r[k]:.2f}" if k in r and r[k] is not None else "-"

    for n, d in res["datasets"].items():
        for r in d["rows"]:
            verdict = ("refused: " + ", ".join(r["failed"])) if r["failed"] else f"passes ({r['gate_grade']})"
            ok = (not r["failed"]) == (r["family"] == "pass")
            lines.append(f"| {n} | {'must pass' if r['family'] == 'pass' else 'must refuse'} | {r['label']} | "
                         f"{f(r, 'c2st_auc')} / {f(r, 'c2st_auc_32px')} / {f(r, 'c2st_auc_16px')} | "
                         f"{f(r, 'fid_domain_16px_ratio_to_floor')} | {f(r, 'prdc_recall_16px')} / "
                         f"{f(r, 'prdc_coverage_16px')} | {f(r, 'diversity_ratio')} | {f(r, 'utility_cas_ratio')} | "
                         f"{verdict}{'' if ok else ' **WRONG**'} |")
    lines += ["", f"Every must-pass change passes every floor: **{'yes' if not wrong_refused else 'NO'}**"
              + (f" (refused: {'; '.join(wrong_refused)})" if wrong_refused else "")
              + f"; every must-refuse change is refused: **{'yes' if not wrong_passed else 'NO'}**"
              + (f" (passed: {'; '.join(wrong_passed)})" if wrong_passed else "") + ".", END]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--write", default=None, help="update this markdown file's section")
    ap.add_argument("--from-json", default=None, help="re-render a saved judge_families.json instead of measuring")
    args = ap.parse_args(argv)
    os.environ.setdefault("MEDSYNTH_QUIET", "1")
    if args.from_json:
        res = json.loads(Path(args.from_json).read_text())
    else:
        res = bench(args.datasets.split(","), out_json=OUT / "judge_families.json")
    text = markdown(res)
    print(text)
    if args.write:
        write_section(Path(args.write), text, "judge_families", SECTION)
    wrong_refused, wrong_passed = outcome(res)
    return 1 if wrong_refused or wrong_passed else 0


if __name__ == "__main__":
    raise SystemExit(main())
