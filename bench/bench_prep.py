"""Data-preparation throughput: ingest, validate and preprocess on the bundled real CT set.

    .venv/bin/python bench/bench_prep.py [--repeats 3] [--no-cli] [--write docs/BENCHMARKS.md]

1. In-process (libraries already imported): each step timed separately, best of ``--repeats``, in
   images/s of wall time and of process CPU time (CPU time is steadier on a shared machine).
2. Cold CLI: the three ``medsynth`` commands as a user runs them (interpreter start, imports,
   MLflow off), wall time end to end.
3. The figures go to bench/out/bench_prep.json and, with ``--write``, into the "Data preparation"
   section of docs/BENCHMARKS.md (between its markers; the rest of the file is left alone).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchdoc import machine, markers, timed, write_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
START, END = markers("prep")
SECTION = "## Data preparation"






def in_process(repeats: int) -> dict:
    t0 = time.perf_counter()
    import great_expectations  # noqa: F401 - timed: the one-off import cost validate pays
    import torch

    imports_s = time.perf_counter() - t0
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    from medsynth.components.ingest import IngestConfig, ingest_sources
    from medsynth.components.preprocess import PreprocessConfig, preprocess_dataset
    from medsynth.components.validate import ValidateConfig, validate_dataset
    from medsynth.config import load_stage, read_params

    params = read_params(REPO / "params.yaml")
    ing = load_stage(IngestConfig, "ingest", params, {"ingest.dataset": "ct", "ingest.limit_per_class": "null"})
    vcfg = load_stage(ValidateConfig, "validate", params)
    pcfg = load_stage(PreprocessConfig, "preprocess", params)
    best: dict[str, tuple[float, float]] = {}
    n = 0
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as d:
            root = Path(d)
            r, w1, c1 = timed(lambda root=root: ingest_sources(ing.sources, REPO / "data", root / "ingest"))
            n = r.n_images
            _, w2, c2 = timed(lambda root=root: validate_dataset(vcfg, root / "ingest", root / "validate"))
            _, w3, c3 = timed(lambda root=root: preprocess_dataset(pcfg, root / "validate", root / "preprocess"))
        for step, w, c in (("ingest", w1, c1), ("validate", w2, c2), ("preprocess", w3, c3),
                           ("end to end", w1 + w2 + w3, c1 + c2 + c3)):
            if step not in best or w < best[step][0]:
                best[step] = (w, c)
    return {"n_images": n, "imports_s": imports_s, "resolution": pcfg.resolution,
            "steps": {k: {"wall_s": w, "cpu_s": c, "images_per_s": n / w, "images_per_cpu_s": n / c}
                      for k, (w, c) in best.items()}}


def cold_cli() -> dict:
    exe = Path(sys.executable).parent / "medsynth"
    with tempfile.TemporaryDirectory() as d:
        env = {**os.environ, "MEDSYNTH_HOME": d, "MEDSYNTH_DATA_DIR": str(REPO / "data"), "MEDSYNTH_QUIET": "1"}
        env.pop("MLFLOW_TRACKING_URI", None)
        cmds = [[str(exe), step, "--params", str(REPO / "params.yaml"), "--no-track"]
                for step in ("ingest", "validate", "preprocess")]
        t0 = time.perf_counter()
        for c in cmds:
            subprocess.run(c, env=env, check=True, capture_output=True, timeout=600)
        wall = time.perf_counter() - t0
    return {"wall_s": wall, "command": " && ".join(shlex.join(["medsynth", *c[1:2], "--no-track"]) for c in cmds)}


def markdown(res: dict) -> str:
    n = res["n_images"]
    lines = [
        SECTION, "", START,
        f"Bundled real CT set (`data/mednist_ct_small.npz`, {n} images, 64 px uint8, 3 classes) through "
        f"ingest -> validate -> preprocess ({res['resolution']} px). Best of {res['repeats']} in-process runs "
        "(libraries already imported; no MLflow logging).", "",
        f"- command: `{res['command']}`",
        f"- machine: {res['machine']}; load average at start {res['load_avg']}",
        f"- measured: {res['date']}", "",
        "| step | wall s | images/s (wall) | CPU s | images/CPU-s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for step, s in res["steps"].items():
        lines.append(f"| {step} | {s['wall_s']:.2f} | {s['images_per_s']:,.0f} | {s['cpu_s']:.2f} | {s['images_per_cpu_s']:,.0f} |")
    lines += ["", f"One-off import cost of Great Expectations + torch in a fresh process: {res['imports_s']:.1f} s."]
    if res.get("cli"):
        cli = res["cli"]
        lines.append(f"Cold CLI end to end (`{cli['command']}`, three fresh processes, imports included): "
                     f"{cli['wall_s']:.1f} s = {n / cli['wall_s']:,.0f} images/s.")
    lines += ["", "The machine is shared (see the load average): CPU-time rates are the steadier figure.", END]
    return "\n".join(lines)




def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-cli", action="store_true", help="skip the cold CLI run")
    ap.add_argument("--write", default=None, help="update this markdown file's Data preparation section")
    args = ap.parse_args(argv)
    os.environ.setdefault("MEDSYNTH_QUIET", "1")
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    res = in_process(max(1, min(args.repeats, 20)))
    res |= {"repeats": args.repeats, "machine": machine(), "load_avg": load,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "command": shlex.join(["python", "bench/bench_prep.py", *(argv if argv is not None else sys.argv[1:])])}
    if not args.no_cli:
        res["cli"] = cold_cli()
    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_prep.json").write_text(json.dumps(res, indent=2) + "\n")
    text = markdown(res)
    print(text)
    if args.write:
        write_section(Path(args.write), text, 'prep', SECTION)
    return 0


if __name__ == "__main__":
    sys.exit(main())
