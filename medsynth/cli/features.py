"""``medsynth features``: train the domain feature extractor used by FID-domain / KID-domain / PRDC.

A small CNN learns every bundled dataset's classes together (pediatric normal/pneumonia X-ray,
adult chest X-ray, abdomen/chest/head CT, breast MRI) on their real training splits; its
penultimate layer is the feature space. Saved with its sha256 under <artifacts>/features/<name>/
and logged to MLflow with its own test accuracy.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from medsynth.cli import add_common

    p = sub.add_parser("features", help="train the domain feature extractor for FID-domain/KID-domain",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(p)
    p.add_argument("--out", default=None, help="output folder (default: <artifacts>/features/<features.name>)")
    p.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from medsynth.cli import Context
    from medsynth.components.features import FeaturesConfig, run
    from medsynth.components.ingest import IngestConfig

    ctx = Context(args)
    ingest = ctx.stage(IngestConfig, "ingest")
    ext = run(ctx.stage(FeaturesConfig, "features"), ctx.project, ingest.datasets, args.out, track=not args.no_track)
    m = ext.meta
    print(f"feature extractor {m['backbone']} version {ext.version}: test accuracy {m['test_accuracy']:.3f} "
          f"(AUC {m['test_auc']:.3f}) on {m['n_test']} real test images of {len(m['classes'])} classes, "
          f"trained in {m['train_seconds']:.0f}s; saved to {ext.root}")
    return 0
