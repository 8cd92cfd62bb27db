"""``medsynth pipeline``: compile the KFP pipeline, run it locally, submit or schedule it on a cluster.

  medsynth pipeline compile [--out FILE] [--registry REG] [--bake-params]
  medsynth pipeline run --local [--root DIR] [--verbose]
  medsynth pipeline submit --host URL [--run-name NAME] [--registry REG] [--no-cache]
  medsynth pipeline schedule --cron "0 3 * * *" --host URL [--name NAME] [--registry REG]
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from medsynth.cli import add_common

    p = sub.add_parser("pipeline", help="compile / run locally / submit / schedule the Kubeflow pipeline",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    psub = p.add_subparsers(dest="pipeline_command", metavar="ACTION")
    psub.required = True

    c = psub.add_parser("compile", help="compile the pipeline to YAML (default: the copy kept in the repo)")
    add_common(c)
    c.add_argument("--out", default=None, help="output file (default: pipelines/training_pipeline.yaml)")
    c.add_argument("--registry", default=None, help="image registry prefix, e.g. ghcr.io/acme")
    c.add_argument("--bake-params", action="store_true",
                   help="store params.yaml (+ --set) as parameter defaults, for uploads through the KFP UI")
    c.set_defaults(func=_compile)

    r = psub.add_parser("run", help="run the whole pipeline on this machine (kfp.local, no Docker)")
    add_common(r)
    r.add_argument("--local", action="store_true", required=True, help="run with kfp.local (the only mode of `run`)")
    r.add_argument("--root", default=None, help="pipeline root for task outputs (default: <artifacts>/kfp)")
    r.add_argument("--verbose", action="store_true", help="show every task's log (default: log file only)")
    r.set_defaults(func=_run_local)

    for name, helptext in (("submit", "upload and start one run on a KFP cluster"),
                           ("schedule", "create a recurring run (cron) on a KFP cluster")):
        s = psub.add_parser(name, help=helptext)
        add_common(s)
        s.add_argument("--host", required=True, help="KFP API URL, e.g. http://127.0.0.1:8080 (or $KF_PIPELINES_ENDPOINT)")
        s.add_argument("--namespace", default=None, help="Kubeflow profile namespace (multi-user clusters)")
        s.add_argument("--experiment", default="medsynth", help="KFP experiment name")
        s.add_argument("--registry", default=None, help="image registry prefix, e.g. ghcr.io/acme")
        s.add_argument("--timeout", type=float, default=5.0, help="seconds per connection attempt (3 attempts)")
        if name == "submit":
            s.add_argument("--run-name", default=None)
            s.add_argument("--no-cache", action="store_true", help="rerun every step (e.g. new data behind ingest)")
            s.set_defaults(func=_submit)
        else:
            s.add_argument("--cron", required=True, help='"min hour day month weekday" (or 6 fields, seconds first)')
            s.add_argument("--name", default="medsynth-retrain", help="recurring run name")
            s.add_argument("--cache", action="store_true", help="allow cache hits (off: each run re-reads its data)")
            s.set_defaults(func=_schedule)


def _arguments(args: argparse.Namespace) -> dict[str, str]:
    from medsynth.config import parse_overrides, read_params
    from medsynth.pipelines.training_pipeline import pipeline_arguments

    return pipeline_arguments(read_params(args.params), parse_overrides(args.overrides))


def _compile(args: argparse.Namespace) -> int:
    from medsynth.pipelines.training_pipeline import PIPELINE_YAML, compile_pipeline

    arguments = _arguments(args) if args.bake_params else None
    out = compile_pipeline(args.out or PIPELINE_YAML, registry=args.registry, arguments=arguments)
    print(f"compiled pipeline to {out}")
    return 0


def _run_local(args: argparse.Namespace) -> int:
    from medsynth.config import parse_overrides, read_params
    from medsynth.pipelines.local import run_local

    res = run_local(read_params(args.params), parse_overrides(args.overrides), args.root, echo=args.verbose)
    print(f"  {'step':<11} {'wall s':>8} {'CPU s':>8}")
    for step, sec in res.step_seconds.items():
        print(f"  {step:<11} {sec:8.1f} {res.step_cpu_seconds.get(step, 0.0):8.1f}")
    print(f"pipeline finished in {res.total_seconds:.1f}s; outputs in {res.run_dir}; "
          f"MLflow parent run {res.parent_run_id}; log {res.log_file}")
    return 0


def _conn(args: argparse.Namespace):
    from medsynth.pipelines.remote import Connection

    return Connection(host=args.host, namespace=args.namespace, timeout_s=args.timeout)


def _submit(args: argparse.Namespace) -> int:
    from medsynth.pipelines.remote import submit

    arguments = _arguments(args)  # config errors first, before touching the network
    run_id = submit(_conn(args), arguments, run_name=args.run_name, experiment=args.experiment,
                    registry=args.registry, enable_caching=not args.no_cache)
    print(f"submitted run {run_id}: {args.host.rstrip('/')}/#/runs/details/{run_id}")
    return 0


def _schedule(args: argparse.Namespace) -> int:
    from medsynth.pipelines.remote import kfp_cron, schedule

    kfp_cron(args.cron)  # a bad cron fails before the network is touched
    arguments = _arguments(args)
    job_id = schedule(_conn(args), args.cron, arguments, name=args.name, experiment=args.experiment,
                      registry=args.registry, enable_caching=args.cache)
    print(f"scheduled {args.name!r} ({kfp_cron(args.cron)}): recurring run {job_id}")
    return 0
