"""``medsynth evaluate``: score a generator, or any set of images, against the real test split
(FID-domain, KID-domain, C2ST detectability, PRDC, SSIM/PSNR to nearest neighbour, diversity,
conditional accuracy, privacy, utility) and check the gate's absolute floors (promote.gate).

What is scored is one of: --model-uri (MLflow ``runs:/<id>/...`` or ``models:/<name>@<alias>``),
--generator (a generator.pt written by training), --images PATH (an .npz with ``images`` uint8
[N,H,W] and optional ``labels`` -- class indices or names -- or a folder of PNGs, optionally one
subfolder per class: another generator's outputs, a published model's samples, degraded real
images), or --reference SPLIT (held-out *real* images of that split: what real-vs-real scores look
like). Every source goes through the same protocol. Writes metrics.json, report.md and figures to
--out and logs everything to MLflow. The domain feature extractor is trained first when missing.
"""

from __future__ import annotations

import argparse

from medsynth import metric_keys as K


def register(sub: argparse._SubParsersAction) -> None:
    from medsynth.cli import add_common

    p = sub.add_parser("evaluate", help="score a generator: FID-/KID-domain, PRDC, privacy, utility",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model-uri", default=None, help="MLflow model URI: runs:/<run_id>/<path> or models:/<name>@<alias>")
    src.add_argument("--generator", default=None, help="a generator.pt written by training (or its folder), or zoo:<dataset> (a shipped champion)")
    src.add_argument("--images", default=None, metavar="PATH",
                     help="an .npz (images uint8 [N,H,W], optional labels) or a folder of PNGs (optionally <class>/*.png)")
    src.add_argument("--reference", default=None, choices=["train", "val", "test"],
                     help="real images of this split as the 'generator' (a reference point, not synthetic)")
    p.add_argument("--data", default=None, help="preprocessed dataset (default: <artifacts>/preprocess)")
    p.add_argument("--out", default=None, help="output folder (default: <artifacts>/evaluate)")
    p.add_argument("--metrics", default=None, help="also copy metrics.json to this file (DVC metrics)")
    p.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import shutil
    from pathlib import Path

    from medsynth.cli import Context
    from medsynth.components import features
    from medsynth.components.evaluate import (
        EvaluateConfig,
        HeldOutReal,
        check_generator,
        image_set_from_files,
        run,
    )
    from medsynth.components.ingest import IngestConfig
    from medsynth.components.promote import PromoteConfig
    from medsynth.prepared import PreparedData
    from medsynth.training.loading import load_generator

    ctx = Context(args)
    project = ctx.project
    cfg = ctx.stage(EvaluateConfig, "evaluate")
    fcfg = ctx.stage(features.FeaturesConfig, "features")
    data_dir, out = ctx.path(args.data, "preprocess"), ctx.path(args.out, "evaluate")
    data = PreparedData.load(data_dir)  # fail on a bad dataset before any training or loading
    track = not args.no_track
    gate = ctx.stage(PromoteConfig, "promote").gate  # the floors recorded in metrics.json
    if args.images:
        gen = image_set_from_files(args.images, data)  # a bad file is an error before any extractor training
        uri = gen.source
    elif args.reference:
        gen, uri = HeldOutReal(data, args.reference), f"reference:{args.reference}"
    elif args.generator:
        ref = args.generator  # a file path is recorded absolute; zoo:<dataset> as given
        gen, uri = load_generator(ref), ref if ref.startswith("zoo:") else str(Path(ref).resolve())
    else:
        gen, uri = load_generator(args.model_uri, project), args.model_uri
    if not args.images:
        check_generator(gen, data)  # a mismatch is an error before any extractor training
    ingest = ctx.stage(IngestConfig, "ingest")
    ext = features.ensure(fcfg, project, ingest.datasets, cfg.extractor or None, track=track,
                          retrain_stale=not cfg.extractor)
    res = run(cfg, project, gen, data_dir, out, extractor=ext, track=track, model_uri=uri, gate=gate)
    if args.metrics:
        Path(args.metrics).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / "metrics.json", args.metrics)
    m = res.metrics
    flag = "  [UNSTABLE: " + "; ".join(m[K.UNSTABLE_REASONS]) + "]" if m[K.UNSTABLE] else ""
    print(f"FID-domain {m[K.FID_DOMAIN]:.3f} (real floor {m[K.FID_DOMAIN_FLOOR]:.3f}), "
          f"KID-domain {m[K.KID_DOMAIN_MEAN]:.4f}"
          + (f", C2ST AUC {m[K.C2ST_AUC]:.3f} (real-vs-real {m[K.C2ST_AUC_FLOOR]:.3f}; at 16 px "
             f"{m.get(K.C2ST_AUC_16PX, float('nan')):.3f})" if K.C2ST_AUC in m else "")
          + f", precision {m.get(K.PRDC_PRECISION, float('nan')):.3f}, "
          f"recall {m.get(K.PRDC_RECALL, float('nan')):.3f}, near-copies {m[K.PRIVACY_NEAR_COPY_SHARE]:.3%}"
          + (f", conditional accuracy {m[K.COND_ACCURACY]:.3f}" if K.COND_ACCURACY in m else "")
          + (f", utility ACC real {m[K.UTILITY_ACC_REAL]:.3f} / +synthetic {m[K.UTILITY_ACC_REAL_PLUS_SYNTH]:.3f}"
             if K.UTILITY_ACC_REAL in m else "") + flag)
    failed = [f"{k} ({v['detail']})" for k, v in m[K.GATE_FLOORS].items() if not v["passed"]]
    print("gate floors: passed" if m[K.GATE_FLOORS_PASSED] else "gate floors: FAILED: " + "; ".join(failed))
    print(f"grade: {m.get(K.GATE_GRADE_REASON, 'not graded')}")
    for reason in m.get(K.SMALL_REFERENCE_REASONS, []):
        print(f"note: {reason}")
    print(f"backbone {m[K.PROTOCOL][K.BACKBONE]}, {m[K.N_GENERATED]} generated vs {m[K.N_REAL_TEST]} real test images; "
          f"report {out / 'report.md'} ({res.seconds:.0f}s)")
    return 0
