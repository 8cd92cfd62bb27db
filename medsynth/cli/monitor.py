"""``medsynth monitor``: drift checks on new real batches, the trigger decision and its history.

  medsynth monitor --batch PATH [--dry-run]   check a batch (any format ingest reads) against the
                                              champion's training data, then apply the trigger
                                              policy; --dry-run prints the decision without acting
  medsynth monitor decide [--dry-run]         apply the trigger policy to the history + feedback now
  medsynth monitor history [--plot PNG]       table of checks and decisions, and a plot
  medsynth monitor outputs --generator URI    the champion's generated images against its first
                                              (evaluation-time) batch: catches a silently broken model
  medsynth monitor approve HASH --reason TEXT   approve a checked in-domain batch for retraining
  medsynth monitor rate --model M --version V --rating unrealistic   add one rating (as the app does)
  medsynth monitor loop [--shift blur=1.0]    the whole loop: champion -> drifted batches -> trigger ->
                                              retraining on old + new data -> gate -> re-check

A trigger starts the retraining pipeline on the accumulated data: locally through kfp.local
(--launch local, the default) or as a run on a KFP cluster (--launch kfp --host URL). Batches used
by a retraining never trigger again. Only eligible batches are learnt from: a batch the monitor
finds off-domain (another anatomy or modality) never is; an in-domain batch is once a person
approves it (`monitor approve`) or `monitor.policy.auto_approve` is true.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from medsynth.cli import add_common

    p = sub.add_parser("monitor", help="drift checks on new real data, retraining triggers, history",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(p)
    p.add_argument("--batch", default=None, help="new batch of real images: file or folder (npz, DICOM, NIfTI, PNG/JPEG)")
    p.add_argument("--reference", default=None, help="prepared training data of the champion (default: monitor.reference)")
    p.add_argument("--modality", default=None, help="modality of --batch when its files don't say (default: the reference's)")
    p.add_argument("--out", default=None, help="report folder (default: <artifacts>/monitor/<time>-<hash>)")
    p.add_argument("--generator", default=None,
                   help="also check this champion's outputs against its first batch (models:/NAME@champion or generator.pt)")
    _decision_args(p)
    p.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    p.set_defaults(func=_check, monitor_cmd=None)
    ms = p.add_subparsers(dest="monitor_cmd", metavar="SUBCOMMAND")

    d = ms.add_parser("decide", help="apply the trigger policy to the history and the feedback now")
    add_common(d)
    d.add_argument("--reference", default=None, help="prepared training data of the champion")
    _decision_args(d)
    d.set_defaults(func=_decide)

    h = ms.add_parser("history", help="print the checks and decisions as a table and save a plot")
    add_common(h)
    h.add_argument("--limit", type=int, default=30, help="rows to print (latest)")
    h.add_argument("--plot", default=None, help="PNG path (default: <artifacts>/monitor/history.png)")
    h.set_defaults(func=_history)

    o = ms.add_parser("outputs", help="check the champion's generated images against its evaluation-time batch")
    add_common(o)
    o.add_argument("--generator", required=True,
                   help="generator: models:/NAME@champion, models:/NAME/VERSION, runs:/ID/generator, or a generator.pt file")
    o.add_argument("--model", default=None, help="label the history keeps per model (default: the --generator value)")
    o.add_argument("--seed", type=int, default=None, help="seed of this batch (default: one more than the last check)")
    o.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    o.set_defaults(func=_outputs)

    lp = ms.add_parser("loop", help="demo of the whole loop: champion, drifted batches, trigger, retraining, gate, re-check")
    add_common(lp)
    lp.add_argument("--shift", default="blur=1.0", help="acquisition change of the new batches, KIND=VALUE "
                    "(gamma, contrast, noise, blur, resolution; see monitoring/shifts.py)")
    lp.add_argument("--reference", default=None, help="prepared data of an existing champion (default: train one now)")
    lp.set_defaults(func=_loop)

    a = ms.add_parser("approve", help="approve a checked in-domain batch for retraining (recorded in the history)")
    add_common(a)
    a.add_argument("batch", help="batch hash (>= 8 characters, see `monitor history`) or the path it was checked from")
    a.add_argument("--reason", required=True, help="why this data may be learnt from (kept with the approval)")
    a.add_argument("--by", default=None, help="who approves (default: $USER)")
    a.set_defaults(func=_approve)

    r = ms.add_parser("rate", help="store one rating of a generated image (what the app does)")
    add_common(r)
    r.add_argument("--model", required=True)
    r.add_argument("--version", required=True)
    r.add_argument("--rating", required=True, choices=["realistic", "unrealistic"])
    r.add_argument("--image", default="", help="which image (e.g. seed=3:0)")
    r.add_argument("--comment", default="")
    r.set_defaults(func=_rate)


def _decision_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true", help="print the decision without acting on it")
    p.add_argument("--model", default=None, help="champion's registered name (feedback is read for it)")
    p.add_argument("--version", default=None, help="champion's version (feedback of that version only)")
    p.add_argument("--launch", choices=["local", "kfp", "none"], default="local",
                   help="what a trigger starts: the pipeline via kfp.local (default), a KFP cluster run, or nothing")
    p.add_argument("--host", default=None, help="KFP API URL for --launch kfp")
    p.add_argument("--namespace", default=None, help="KFP namespace for --launch kfp")


def _setup(args: argparse.Namespace):
    from medsynth.cli import Context
    from medsynth.components.monitor import MonitorConfig

    ctx = Context(args)
    return ctx.params, ctx.overrides, ctx.project, ctx.stage(MonitorConfig, "monitor")


def _check(args: argparse.Namespace) -> int:
    if not args.batch:
        from medsynth.errors import InputError

        raise InputError("monitor: give --batch PATH, or a subcommand (decide, history, rate); see --help")
    from medsynth.components.monitor import run

    params, overrides, project, cfg = _setup(args)
    res = run(cfg, project, args.batch, params, out_dir=args.out, reference=args.reference,
              modality=args.modality, model=_label(args), track=not args.no_track)
    print(f"{res.drift.summary_line()}")
    for r in res.drift.reasons:
        print(f"  because: {r}")
    for w in res.warnings:
        print(f"  warning: {w}")
    print(f"  batch {res.batch_hash[:12]}: {res.n_valid} of {res.n_images} images checked, "
          f"{res.n_quarantined} quarantined; {res.seconds:.1f}s")
    if res.domain is not None:
        print(f"  domain: {res.domain.verdict} ({res.domain.reason})"
              + ("; never used for retraining" if res.domain.verdict == "off" else ""))
    report = f"report: {res.report_html}  " if res.report_html.is_file() else ""
    print(f"  {report}summary: {res.out_dir / 'summary.json'}")
    if args.generator:
        _output_check(project, cfg, args.generator, _label(args) or args.generator, None, not args.no_track)
    return _act(args, params, overrides, project, cfg)


def _decide(args: argparse.Namespace) -> int:
    params, overrides, project, cfg = _setup(args)
    return _act(args, params, overrides, project, cfg)


def _approve(args: argparse.Namespace) -> int:
    import getpass

    from medsynth.components.trigger import approve

    _, _, project, _ = _setup(args)
    ev = approve(project, args.batch, args.by or getpass.getuser(), args.reason)
    print(f"approved batch {ev['batch_hash'][:12]} ({ev['domain']}) for retraining, by {ev['by']}: {ev['reason']}")
    return 0


def _label(args: argparse.Namespace) -> str | None:
    if not args.model:
        return None
    return f"{args.model}@{args.version}" if args.version else args.model


def _launcher(args: argparse.Namespace):
    """The launcher --launch names (None: decide only)."""
    if args.launch == "none":
        return None
    from medsynth.pipelines.launch import KfpLauncher, LocalLauncher

    if args.launch == "kfp":
        from medsynth.errors import ConfigError

        if not args.host:
            raise ConfigError("--launch kfp needs --host URL of the KFP API")
        return KfpLauncher(args.host, args.namespace)
    return LocalLauncher()


def _act(args, params, overrides, project, cfg) -> int:
    """Decide, print, and (unless --dry-run / --launch none) start the retraining."""
    from medsynth.components.retrain import act

    launcher = None if args.dry_run else _launcher(args)  # None: decide only (--dry-run, --launch none)
    acted = act(cfg, project, params, overrides, launcher, model=args.model, version=args.version,
                reference=args.reference)
    decision = acted.decision
    print(("[dry run] " if args.dry_run else "") + decision.summary_line())
    if decision.trigger:
        print(f"  {'would retrain' if launcher is None else 'retraining'} on the current data + {len(decision.batches)} new "
              f"batch(es) ({decision.new_images} images)")
    if acted.launched is not None:
        print(f"  launched: {acted.launched.record}")
        print(f"  {acted.launched.verdict()}")
    return 0


def _history(args: argparse.Namespace) -> int:
    from pathlib import Path

    from medsynth.components.monitor import history_of
    from medsynth.monitoring.history import history_table, plot_history

    _, _, project, _ = _setup(args)
    history = history_of(project)
    events = history.events()
    if not events:
        print(f"no monitoring history yet ({history.path}); run `medsynth monitor --batch PATH`")
        return 0
    print(history_table(events, limit=max(1, min(args.limit, 10_000))))
    png = plot_history(events, Path(args.plot) if args.plot else project.artifacts_path() / "monitor" / "history.png")
    if png:
        print(f"plot: {png}")
    return 0


def _outputs(args: argparse.Namespace) -> int:
    _, _, project, cfg = _setup(args)
    _output_check(project, cfg, args.generator, args.model or args.generator, args.seed, not args.no_track)
    return 0


def _output_check(project, cfg, generator: str, label: str, seed: int | None, track: bool):
    """Check a generator's outputs (any reference load_generator takes); prints the verdict."""
    from medsynth.components.retrain import check_outputs

    res = check_outputs(cfg, project, generator, label, seed=seed, track=track)
    print(f"champion outputs ({label}, seed {res.batch_hash.rsplit(':', 1)[-1]}): {res.drift.summary_line()}")
    for r in res.drift.reasons:
        print(f"  because: {r}")
    print(f"  summary: {res.out_dir / 'summary.json'}")
    return res


def _rate(args: argparse.Namespace) -> int:
    from medsynth.monitoring.feedback import FeedbackStore, default_url

    _, _, project, cfg = _setup(args)
    store = FeedbackStore(cfg.feedback_url or default_url(project.state_path()))
    try:
        store.add(args.model, args.version, args.rating, image_ref=args.image, comment=args.comment)
        s = store.summary(args.model, args.version)
    finally:
        store.close()
    print(f"stored; {args.model} v{args.version}: {s.n_unrealistic}/{s.n_total} unrealistic ({s.unrealistic_share:.0%})")
    return 0


def _loop(args: argparse.Namespace) -> int:
    """Champion -> drifted batches -> monitor -> trigger -> retrain on old + new -> gate -> re-check."""
    from medsynth.components.retrain import loop
    from medsynth.pipelines.launch import LocalLauncher

    params, overrides, project, cfg = _setup(args)
    loop(cfg, project, params, overrides, LocalLauncher(), shift=args.shift, reference=args.reference)
    return 0
