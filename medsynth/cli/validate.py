"""``medsynth validate``: run the Great Expectations suite over an ingested dataset.

Failing records go to <out>/quarantine/ (records.jsonl with reasons, images as .npy); the passing
ones form the validated dataset. Exit 3 when more than validate.max_failure_share of the records
fail (the previous good output is kept; the report goes to <out>.rejected/).
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from medsynth.cli import add_common

    p = sub.add_parser("validate", help="check an ingested dataset with Great Expectations; quarantine bad records",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(p)
    p.add_argument("--in", dest="inp", default=None, help="ingested dataset (default: <artifacts>/ingest)")
    p.add_argument("--out", default=None, help="output folder (default: <artifacts>/validate)")
    p.add_argument("--metrics", default=None, help="also write the step's metrics to this JSON file (DVC metrics)")
    p.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:

    from medsynth.cli import Context
    from medsynth.components.validate import ValidateConfig, metrics_of, run
    from medsynth.fileio import write_json

    ctx = Context(args)
    cfg = ctx.stage(ValidateConfig, "validate")
    res = run(cfg, ctx.project, ctx.path(args.inp, "ingest"), ctx.path(args.out, "validate"), track=not args.no_track)
    if args.metrics:
        write_json(args.metrics, metrics_of(res))
    reasons = ", ".join(f"{k} {v}" for k, v in res.reasons.items()) or "none"
    print(f"validated {res.n_checked} records: {res.n_checked - res.n_failed} passed, {res.n_failed} quarantined "
          f"({res.failure_share:.2%}; {reasons}) into {res.out_dir} in {res.seconds:.1f}s")
    for w in res.class_balance["warnings"]:
        print(f"warning: {w}")
    return 0
