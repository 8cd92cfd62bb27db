"""``medsynth demo``: the whole pipeline on the bundled real data with the embedded defaults.

MLflow on a SQLite file under the project's state folder, artifacts under ``artifacts/``, no server,
no Docker. Every step is nested under one parent MLflow run; the end prints where to look.
"""

from __future__ import annotations

import argparse
import time


def register(sub: argparse._SubParsersAction) -> None:
    from medsynth.cli import add_common

    p = sub.add_parser("demo", help="run the whole pipeline on the bundled real data and print where to look",
                       description=__doc__)
    add_common(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from medsynth.components import ingest, preprocess, validate
    from medsynth.config import load_stage, parse_overrides, read_params
    from medsynth.project import load_project
    from medsynth.tracking import parent_run, redact, tracking_uri

    overrides = parse_overrides(args.overrides)
    params = read_params(args.params)
    project = load_project(params, overrides)
    art = project.artifacts_path()
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    def step(name: str, fn):
        print(f"==> {name}", flush=True)
        t = time.perf_counter()
        out = fn()
        timings[name] = time.perf_counter() - t
        return out

    with parent_run(project, "demo") as run:
        ing_cfg = load_stage(ingest.IngestConfig, "ingest", params, overrides)
        res = step("ingest", lambda: ingest.run(ing_cfg, project, art / "ingest"))
        print(f"    {res.n_images} images from dataset {ing_cfg.dataset!r}, {res.n_quarantined} quarantined")
        val_cfg = load_stage(validate.ValidateConfig, "validate", params, overrides)
        vres = step("validate", lambda: validate.run(val_cfg, project, art / "ingest", art / "validate"))
        print(f"    {vres.n_checked - vres.n_failed}/{vres.n_checked} records passed, {vres.n_failed} quarantined")
        pre_cfg = load_stage(preprocess.PreprocessConfig, "preprocess", params, overrides)
        pres = step("preprocess", lambda: preprocess.run(pre_cfg, project, art / "validate", art / "preprocess"))
        print(f"    prepared {pres.n_images} images at {pre_cfg.resolution} px")
        run_id = run.info.run_id

    uri = tracking_uri(project)
    total = time.perf_counter() - t0
    print()
    print(f"demo finished in {total:.0f}s (" + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()) + ")")
    print("where to look:")
    print(f"  MLflow runs      : .venv/bin/mlflow ui --backend-store-uri {redact(uri)}   (parent run {run_id})")
    print(f"  artifacts        : {art}/  (ingest, validate, preprocess)")
    print(f"  validation report: {art / 'validate' / 'report.md'}")
    return 0
