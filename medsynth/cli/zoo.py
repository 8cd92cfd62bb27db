"""``medsynth zoo``: the shipped champions (one trained generator per bundled dataset).

``medsynth zoo list`` shows what is shipped (dataset, classes, size, sha256, how it was made and
its gate result). ``medsynth zoo build DATASET`` is the one recorded command that makes an entry:
ingest -> validate -> preprocess -> features -> train (``train.profile=zoo``, resumable) ->
evaluate (the gate's absolute floors included) into ``<artifacts>/zoo/<dataset>/``, then copies
the generator (plain tensors), its evaluation report, metrics and model card into
``training/zoo/<dataset>/`` and records every file's sha256 and size in the manifest.
An entry whose evaluation fails the floors is still written (so its report can be read) and
marked ``gate_floors_passed: false``; ``medsynth demo`` registers it and the gate (evaluated again
on the user's machine) keeps it from becoming champion. The sequence itself is `pipelines/zoo_build.py`.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from medsynth.cli import add_common

    p = sub.add_parser("zoo", help="list or build the shipped champions (one trained generator per dataset)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(p)
    p.add_argument("action", choices=["list", "build"])
    p.add_argument("dataset", nargs="?", help="build: the ingest.datasets entry to train on (ct, pneumonia, ...)")
    p.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    p.add_argument("--resume", action="store_true",
                   help="build: continue the saved training state of an earlier build (default: start fresh)")
    p.add_argument("--minutes", type=float, default=None,
                   help="build: train at most this many minutes now (then evaluate); resume later with --resume")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from medsynth.errors import ConfigError
    from medsynth.training import zoo_manifest

    if args.action == "list":
        found = zoo_manifest.entries()
        if not found:
            print("no shipped generators (build one with `medsynth zoo build DATASET`)")
        for name, e in found.items():
            i = e.info
            print(f"{name:10s} {i.get('model', '?'):5s} {i.get('arch', '?'):7s} {len(i.get('classes', [])):2d} classes  "
                  f"{e.size / 1e6:5.2f} MB  steps {i.get('global_step', '?')}  floors "
                  f"{'passed' if i.get('gate_floors_passed') else 'NOT passed'}  sha256 {e.sha256[:12]}")
        return 0
    if not args.dataset:
        raise ConfigError("zoo build: name the dataset, e.g. `medsynth zoo build ct`")
    from medsynth.cli import Context

    ctx = Context(args, extra={"ingest.dataset": args.dataset, "train.profile": "zoo"})
    from medsynth.pipelines.zoo_build import build

    if args.minutes is not None and not 0 < args.minutes <= 100_000:
        raise ConfigError(f"zoo build --minutes: must be in (0, 100000], got {args.minutes}")
    flags = [*(["--resume"] if args.resume else []), *([f"--minutes {args.minutes:g}"] if args.minutes else [])]
    command = " ".join(["medsynth zoo build", args.dataset, *flags, *(f"--set {o}" for o in args.overrides)])
    build(ctx.project, ctx.stage, args.dataset, track=not args.no_track, command=command,
          log=lambda line: print(line, flush=True), resume=args.resume, minutes=args.minutes)
    return 0
