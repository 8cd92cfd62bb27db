"""Wall and CPU time per step of the local KFP pipeline (kfp.local) on the bundled data.

    python bench/bench_pipeline.py [--set section.key=value ...] [--write docs/BENCHMARKS.md]

Runs ``medsynth pipeline run --local``'s function in a fresh project folder (its own MLflow store),
so nothing is cached; prints a Markdown table and, with ``--write``, replaces the "Pipeline"
section of docs/BENCHMARKS.md between its markers.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from benchdoc import machine, markers, write_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
START, END = markers("pipeline")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--write", default=None, help="Markdown file whose Pipeline section is replaced")
    args = ap.parse_args()

    from medsynth.config import parse_overrides, read_params
    from medsynth.pipelines.local import run_local

    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as home:
        os.environ.update({"MEDSYNTH_HOME": home, "MEDSYNTH_QUIET": "1"})
        os.environ.setdefault("MEDSYNTH_DATA_DIR", str(REPO / "data"))
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        t0 = time.perf_counter()
        res = run_local(read_params(REPO / "params.yaml"), parse_overrides(args.overrides))
        wall = time.perf_counter() - t0
    slowest = max(res.step_seconds, key=res.step_seconds.get)
    rows = [f"| {s} | {w:.1f} | {res.step_cpu_seconds.get(s, 0.0):.1f} |" for s, w in res.step_seconds.items()]
    cmd = "python bench/bench_pipeline.py" + "".join(f" --set {o}" for o in args.overrides) + " --write docs/BENCHMARKS.md"
    text = "\n".join([
        START,
        "Local KFP pipeline (`kfp.local`, SubprocessRunner in this venv, one process per step, run one after "
        "another) on the bundled data with params.yaml" + (f" and `{' '.join(args.overrides)}`" if args.overrides else "")
        + "; fresh project folder and MLflow store (SQLite), so no step is cached.",
        "",
        f"- command: `{cmd}`",
        f"- machine: {machine()}; load average at start {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}",
        f"- measured: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        "| step | wall s | CPU s (its process) |",
        "| --- | --- | --- |",
        *rows,
        f"| **pipeline** (incl. startup, MLflow parent run) | {wall:.1f} | |",
        "",
        f"Slowest step: **{slowest}**. Each step pays a fresh Python process with its imports (torch, MLflow, "
        "Great Expectations: several seconds each) and its own MLflow run; compare the in-process figures in "
        "\"Data preparation\". On a shared machine (see the load average) CPU seconds are the steadier figure.",
        END,
    ])
    print(text)
    if args.write:
        write_section(Path(args.write), text, "pipeline", "## Pipeline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
