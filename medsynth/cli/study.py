"""``medsynth study``: the DCGAN vs conditional GAN study across X-ray, CT and MRI.

Runs the grid of a profile (model x dataset x seeds) through the normal pipeline steps, each
an MLflow run in the study experiment, then writes the results document (default
docs/RESULTS.md, figures in docs/results/) from those MLflow runs. Profiles: ``micro`` (one cell,
about a minute: a check of the machinery), ``quick`` (the whole grid, 3 seeds, 32 px, about 30 minutes
on 2 CPU cores), ``full`` (64 px, long training, 3 seeds: for a GPU). Re-running the same command
after an interruption skips the finished runs and resumes the interrupted one.

``medsynth study --augment`` answers the augmentation question instead: classifiers trained on
real, real + synthetic (from ``--generator``, default the shipped pneumonia generator) and the
duplicated-real controls, over seeds (medsynth/study/augment_study.py); its block in the results
document is replaced, the rest of the document is left as it is.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from medsynth.cli import add_common

    p = sub.add_parser("study", help="run the DCGAN vs cGAN study grid and write docs/RESULTS.md from MLflow",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(p)
    p.add_argument("--profile", default="quick", help="micro | quick | full (default: quick)")
    p.add_argument("--seeds", default=None, help="comma-separated training seeds (default: the profile's)")
    p.add_argument("--cells", default=None, help="comma-separated cells to run, e.g. cgan-ct,dcgan-mri "
                   "(default: the profile's whole grid)")
    p.add_argument("--out", default="docs/RESULTS.md", help="results document (figures go beside it in results/)")
    p.add_argument("--experiment", default="study", help="MLflow experiment of the study runs (default: study)")
    p.add_argument("--report-only", action="store_true",
                   help="do not train: rewrite the document from the runs already in MLflow (with --augment: "
                   "the augmentation block from the newest augment run)")
    p.add_argument("--study-id", default=None,
                   help="with --report-only: report this study (e.g. one run by older code; the id is printed by "
                   "every study and kept in the document) instead of the one the current settings and code give")
    p.add_argument("--augment", action="store_true",
                   help="run the augmentation question (real + synthetic vs duplicated real) instead of the grid")
    p.add_argument("--generator", default="zoo:pneumonia",
                   help="with --augment: the conditional generator (zoo:<dataset>, a generator.pt, runs:/ or models:/ "
                   "URI; default zoo:pneumonia); its dataset is prepared like a zoo build's")
    p.add_argument("--epochs", type=int, default=None, help="with --augment: epochs per classifier fit (default 6)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from medsynth.cli import Context
    from medsynth.errors import ConfigError
    from medsynth.study import report as study_report
    from medsynth.study import run as study

    try:
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    except ValueError:
        raise ConfigError(f"--seeds: expected comma-separated integers, got {args.seeds!r}") from None
    if args.augment:
        return _augment(args, seeds)
    ctx = Context(args)
    cells = [c.strip() for c in args.cells.split(",") if c.strip()] if args.cells else None
    prof = study.get_profile(args.profile, seeds, cells)
    user = {k: v for k, v in ctx.overrides.items() if not k.startswith("project.")}
    plan = study.plan(prof, ctx.params, user, ctx.project, args.experiment)
    if args.study_id and not args.report_only:
        raise ConfigError("--study-id: only with --report-only (a run always uses the id of its settings and code)")
    study_id = args.study_id or plan.study_id
    if not args.report_only:
        res = study.run(plan, ctx.params, ctx.project)
        print(f"study {res.study_id}: {len(res.ran)} runs done, {len(res.skipped)} reused, {res.seconds:.0f}s")
    out = Path(args.out)
    command = (f"medsynth study --profile {prof.name}" + (f" --seeds {args.seeds}" if args.seeds else "")
               + (f" --cells {args.cells}" if args.cells else ""))
    study_report.write(ctx.project, study_id, args.experiment, out, command)
    print(f"results: {out} (figures in {out.parent / 'results'})")
    print(f"MLflow  : experiment {args.experiment!r}, tag medsynth.study.id = {study_id}")
    return 0


def _augment(args: argparse.Namespace, seeds: list[int] | None) -> int:
    from pathlib import Path

    from medsynth.cli import Context
    from medsynth.errors import ConfigError
    from medsynth.pipelines.zoo_build import prepare
    from medsynth.prepared import PreparedData
    from medsynth.study import augment_study
    from medsynth.training.loading import load_generator

    if args.cells or args.study_id:
        raise ConfigError("--augment: --cells and --study-id belong to the study grid")
    if args.report_only:
        ctx = Context(args)
        res = augment_study.rewrite(ctx.project, Path(args.out), "medsynth study --augment")
        print(f"augmentation question ({res.generator}, {len(res.settings.seeds)} seeds) rewritten from MLflow: {args.out}")
        return 0
    gen = load_generator(args.generator)
    augment_study.check_generator(gen)
    dataset = (args.generator.split(":", 1)[1] if args.generator.startswith("zoo:")
               else next((o.split("=", 1)[1] for o in args.overrides if o.startswith("ingest.dataset=")), ""))
    if not dataset:
        raise ConfigError("--augment: name the generator's dataset with --set ingest.dataset=NAME "
                          "(implied for zoo:<dataset>)")
    ctx = Context(args, extra={"ingest.dataset": dataset})
    prepare(ctx.project, ctx.stage, dataset, log=lambda line: print(line, flush=True))
    data = PreparedData.load(ctx.project.artifacts_path() / "zoo" / dataset / "preprocess")
    settings = augment_study.AugmentSettings(**({"seeds": tuple(seeds)} if seeds else {}),
                                       **({"epochs": args.epochs} if args.epochs else {}))
    command = " ".join(["medsynth study --augment", *(f"--generator {args.generator}",) * (args.generator != "zoo:pneumonia"),
                        *(f"--seeds {args.seeds}",) * bool(args.seeds), *(f"--epochs {args.epochs}",) * bool(args.epochs)])
    sha = augment_study.generator_sha256(args.generator)
    res = augment_study.run_tracked(ctx.project, gen, data, settings, args.generator, dataset, Path(args.out), command,
                              log=lambda line: print(line, flush=True), generator_sha256=sha)
    print(f"augmentation question: {len(res.scores)} arms x {len(settings.seeds)} seeds in {res.seconds / 60:.1f} min; "
          f"results: {args.out} ({augment_study.SECTION[3:]})")
    return 0
