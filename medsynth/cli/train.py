"""``medsynth train``: train a DCGAN / conditional GAN on the preprocessed artifact.

Settings come from ``train:`` in params.yaml (a profile -- smoke, demo, full -- sets the length;
explicit keys win). A run killed part-way resumes from <out>/checkpoints/last.pt when the same
command is run again. Distributed: launch the same command with
``torchrun --nproc_per_node=N -m medsynth train ...`` (gloo on CPU, NCCL on GPUs).
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from medsynth.cli import add_common

    p = sub.add_parser("train", help="train a DCGAN / conditional GAN generator (resumable, tracked in MLflow)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(p)
    p.add_argument("--in", dest="inp", default=None, help="preprocessed artifact (default: <artifacts>/preprocess)")
    p.add_argument("--out", default=None, help="output folder: checkpoints, generator.pt, samples (default: <artifacts>/train)")
    p.add_argument("--profile", default=None, help="shortcut for --set train.profile=NAME (smoke, demo, full, custom)")
    p.add_argument("--model", default=None, help="shortcut for --set train.model=NAME (dcgan, cgan)")
    p.add_argument("--no-resume", action="store_true",
                   help="start from scratch even when <out>/checkpoints/last.pt exists (it is overwritten)")
    p.add_argument("--metrics", default=None, help="also write the step's metrics to this JSON file (DVC metrics)")
    p.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from medsynth.components.train import metrics_of, resume_note, run
    from medsynth.config import check_all_overrides, parse_overrides, read_params
    from medsynth.fileio import write_json
    from medsynth.project import load_project
    from medsynth.training.distributed import is_main_process
    from medsynth.training.train_config import load_train_config

    overrides = parse_overrides(args.overrides)
    if args.profile:
        overrides["train.profile"] = args.profile
    if args.model:
        overrides["train.model"] = args.model
    params = read_params(args.params)
    check_all_overrides(params, overrides)
    project = load_project(params, overrides)
    cfg = load_train_config(params, overrides)
    inp = Path(args.inp) if args.inp else project.artifacts_path() / "preprocess"
    out = Path(args.out) if args.out else project.artifacts_path() / "train"
    res = run(cfg, project, inp, out, track=not args.no_track, resume=not args.no_resume)
    if not is_main_process():
        return 0
    if args.metrics:
        write_json(args.metrics, metrics_of(res))
    resumed = resume_note(res)
    m = res.metrics
    print(f"trained {cfg.model} ({cfg.profile.value}) for {res.global_step} steps{resumed} in {res.seconds:.1f}s: "
          f"loss D {m.get('loss_d', float('nan')):.3f} G {m.get('loss_g', float('nan')):.3f}, "
          f"diversity ratio {m.get('diversity_ratio', float('nan')):.2f}; generator {res.generator_path}"
          + (f"; MLflow model runs:/{res.run_id}/generator" if res.run_id else ""))
    return 0
