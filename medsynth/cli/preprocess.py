"""``medsynth preprocess``: turn the validated dataset into the training-ready artifact.

Squares, resizes to preprocess.resolution (28, 32 or 64), windows CT stored in Hounsfield units,
normalises to [-1, 1], keeps each record's split (records without one get a deterministic split by
volume) and writes one .npy per split and array + meta.json (see medsynth/prepared.py). Works one
shard at a time (``--workers`` processes); a re-run redoes only the shards whose inputs changed, and
a killed run resumes where it stopped.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from medsynth.cli import add_common

    p = sub.add_parser("preprocess", help="resize, window and normalise the validated dataset for training",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(p)
    p.add_argument("--in", dest="inp", default=None, help="validated dataset (default: <artifacts>/validate)")
    p.add_argument("--out", default=None, help="output folder (default: <artifacts>/preprocess)")
    p.add_argument("--metrics", default=None, help="also write the step's metrics to this JSON file (DVC metrics)")
    p.add_argument("--workers", type=int, default=None, help="processes, one shard each (default: preprocess.workers)")
    p.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:

    from medsynth.cli import Context
    from medsynth.components.preprocess import PreprocessConfig, metrics_of, run
    from medsynth.fileio import write_json

    ctx = Context(args)
    cfg = ctx.stage(PreprocessConfig, "preprocess")
    res = run(cfg, ctx.project, ctx.path(args.inp, "validate"), ctx.path(args.out, "preprocess"), track=not args.no_track,
              workers=args.workers)
    if args.metrics:
        write_json(args.metrics, metrics_of(res))
    counts = ", ".join(f"{s} {sum(c.values())}" for s, c in res.counts.items())
    print(f"preprocessed {res.n_images} images at {cfg.resolution}px ({counts}) into {res.out_dir} "
          f"in {res.seconds:.1f}s; data hash {res.data_hash[:12]}")
    return 0
