"""The shipped generators under the graded gate: each zoo entry evaluated with today's protocol and policy.

    .venv/bin/python bench/bench_zoo_grades.py [--datasets ct,pneumonia,mri,cxr] [--n 2000] [--write docs/BENCHMARKS.md]

1. Each dataset is prepared by ``bench/judge_families.py``'s ``prepared`` (bench/out/judge/, untracked), with the
   project's domain extractor trained there once.
2. ``zoo:<dataset>`` (training/zoo/, sha256-checked) is scored by ``medsynth evaluate``'s ``run`` under the
   gate policy of params.yaml: its floors, the grade and its reason, C2ST at 64 / 32 / 16 px, the coarse
   view's FID ratio and recall per class. The evaluation folders stay in bench/out/zoo_grades/<dataset>/.
3. ``--write``: the table into docs/BENCHMARKS.md between its markers.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchdoc import machine, markers, write_section  # noqa: E402
from judge_families import bench_project, prepared  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out"
START, END = markers("zoo_grades")
SECTION = "## Shipped generators under the graded gate"
KEYS = ("c2st_auc", "c2st_auc_32px", "c2st_auc_16px", "fid_domain_16px_ratio_to_floor", "prdc_recall_16px",
        "prdc_coverage_16px", "utility_cas_ratio", "gate_grade", "gate_grade_reason")


def bench(names: list[str], n: int, seed: int = 0) -> dict[str, Any]:
    import dataclasses

    from medsynth import metric_keys as K
    from medsynth.components.evaluate import EvaluateConfig, run
    from medsynth.components.gate import gate_policy, per_class
    from medsynth.config import load_stage, read_params
    from medsynth.training.loading import load_generator

    params = read_params(REPO / "params.yaml")
    policy = gate_policy(params)
    project = bench_project(seed)
    cfg = dataclasses.replace(load_stage(EvaluateConfig, "evaluate", params), n_generated=n)
    res: dict[str, Any] = {"machine": machine(), "when": _dt.datetime.now().isoformat(timespec="minutes"),
                           "policy_sha256": policy.sha256(), "n": n, "datasets": {}}
    for name in names:
        t0 = time.perf_counter()
        data, ext = prepared(project, params, name)
        ev = run(cfg, project, load_generator(f"zoo:{name}"), data.root, OUT / "zoo_grades" / name, extractor=ext,
                 track=False, model_uri=f"zoo:{name}", gate=policy)
        m = ev.metrics
        row = {k: m[k] for k in KEYS if k in m}
        row["failed"] = [f for f, r in m[K.GATE_FLOORS].items() if not r["passed"]]
        row["recall_by_class"] = per_class(m, K.PRDC_RECALL_16PX)
        row["c2st16_by_class"] = per_class(m, K.C2ST_AUC_16PX)
        row["seconds"] = time.perf_counter() - t0
        res["datasets"][name] = row
        print(f"[{name}] {row['gate_grade_reason']}", flush=True)
        (OUT / "zoo_grades.json").write_text(json.dumps(res, indent=1))
    return res


def markdown(res: dict[str, Any]) -> str:
    def f(r: dict[str, Any], k: str) -> str:
        return f"{r[k]:.2f}" if isinstance(r.get(k), float) else "-"

    lines = [SECTION, "", START,
             "Each shipped generator (`training/zoo/`) scored by `medsynth evaluate` on its bundled dataset under the "
             "gate policy in params.yaml. Per-class values: the worst class is what the gate reads.", "",
             "- command: `python bench/bench_zoo_grades.py --write docs/BENCHMARKS.md`",
             f"- machine: {res['machine']}; measured {res['when']}; {res['n']} generated images per entry; gate "
             f"policy `{res['policy_sha256'][:12]}`", "",
             "| entry | C2ST 64 / 32 / 16 px | 16 px C2ST by class | FID-domain 16 px / floor | recall 16 px by class "
             "| CAS ratio | grade |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for n, r in res["datasets"].items():
        by = ", ".join(f"{k} {v:.2f}" for k, v in r["c2st16_by_class"].items()) or "-"
        rec = ", ".join(f"{k} {v:.2f}" for k, v in r["recall_by_class"].items()) or f(r, "prdc_recall_16px")
        lines.append(f"| zoo:{n} | {f(r, 'c2st_auc')} / {f(r, 'c2st_auc_32px')} / {f(r, 'c2st_auc_16px')} | {by} | "
                     f"{f(r, 'fid_domain_16px_ratio_to_floor')} | {rec} | {f(r, 'utility_cas_ratio')} | "
                     f"{r.get('gate_grade_reason', '-')} |")
    lines.append(END)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="ct,pneumonia,mri,cxr")
    ap.add_argument("--n", type=int, default=2000, help="generated images per entry (evaluate.n_generated)")
    ap.add_argument("--write", default=None)
    ap.add_argument("--from-json", default=None)
    args = ap.parse_args(argv)
    os.environ.setdefault("MEDSYNTH_QUIET", "1")
    res = json.loads(Path(args.from_json).read_text()) if args.from_json else bench(args.datasets.split(","), args.n)
    text = markdown(res)
    print(text)
    if args.write:
        write_section(Path(args.write), text, "zoo_grades", SECTION)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
