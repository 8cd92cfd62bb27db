"""``medsynth demo``: the whole pipeline on the bundled real data with the embedded defaults.

MLflow on a SQLite file under the project's state folder, artifacts under ``artifacts/``, no server,
no Docker. Every step is nested under one parent MLflow run; the end prints where to look.

When the project ships a trained generator for the dataset (training/zoo/, ``make zoo``), the demo
registers it first -- evaluated on this machine's data and extractor, gated by the same absolute
floors -- so the app serves a good model from the first minute; the short training that follows
is a challenger that must beat it, and the demo prints which won and why. The sequence itself
is ``pipelines/demo.py``.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from medsynth.cli import add_common

    p = sub.add_parser("demo", help="run the whole pipeline on the bundled real data and print where to look",
                       description=__doc__)
    add_common(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from medsynth.cli import Context
    from medsynth.pipelines.demo import run
    from medsynth.tracking import redact, tracking_uri

    ctx = Context(args)
    out = run(ctx.project, ctx.stage, log=lambda line: print(line, flush=True))
    art, pres2 = out.artifacts, out.promotion
    uri = tracking_uri(ctx.project)
    print()
    print(f"demo finished in {out.seconds:.0f}s (" + ", ".join(f"{k} {v:.1f}s" for k, v in out.timings.items()) + ")")
    print("where to look:")
    print(f"  MLflow runs      : .venv/bin/mlflow ui --backend-store-uri {redact(uri)}   (parent run {out.parent_run_id})")
    print(f"  artifacts        : {art}/  (ingest, validate, preprocess, train, evaluate, promote)")
    print(f"  validation report: {art / 'validate' / 'report.md'}")
    print(f"  evaluation report: {art / 'evaluate' / 'report.md'}")
    print(f"  model card       : {art / 'promote' / 'model_card.md'}")
    champs = [p for p in (out.shipped, pres2) if p is not None and p.champion_version]
    champ_now = ("; ".join(f"champion: models:/{p.name}@champion (v{p.champion_version})" for p in champs)
                 if champs else "no champion: no model passed the gate's floors yet")
    print(f"  registry         : .venv/bin/medsynth review list --all   ({champ_now})")
    print("  app              : .venv/bin/medsynth app   (Streamlit on http://127.0.0.1:8501)")
    return 0
