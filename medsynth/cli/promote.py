"""``medsynth promote``, ``medsynth review`` and ``medsynth rollback``: the model registry."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from medsynth.cli import add_common

    p = sub.add_parser("promote", help="register the trained generator, gate it, move `champion` when it passes",
                       description="Register the model from --train, gate its --eval metrics (absolute floors, then the "
                       "current champion; policy: promote.gate in params.yaml) and move the alias if it passes. "
                       "An evaluation of another model, data hash or feature extractor is refused.")
    add_common(p)
    p.add_argument("--train", default=None, help="train output folder (default: <artifacts>/train)")
    p.add_argument("--eval", default=None, help="evaluate output folder (default: <artifacts>/evaluate)")
    p.add_argument("--out", default=None, help="output folder (default: <artifacts>/promote)")
    p.set_defaults(func=_promote)

    r = sub.add_parser("review", help="list challengers; approve or reject a model version",
                       description="Registry review: `list` shows versions with gate results and model "
                       "cards; `approve`/`reject` record the reviewer's decision (who, when, why) as tags.")
    add_common(r)
    r.add_argument("action", choices=["list", "approve", "reject"])
    r.add_argument("version", nargs="?", help="model version (approve/reject)")
    r.add_argument("--name", default=None, help="registered model name (default: every model for list)")
    r.add_argument("--reason", default="", help="why (required for approve/reject)")
    r.add_argument("--reviewer", default=None, help="reviewer name (default: $MEDSYNTH_USER or the login)")
    r.add_argument("--all", action="store_true", help="list every version, not only pending ones")
    r.add_argument("--cards", action="store_true", help="print each listed version's model card")
    r.set_defaults(func=_review)

    b = sub.add_parser("rollback", help="move `champion` back to an earlier gated version")
    add_common(b)
    b.add_argument("version", help="version to make champion again")
    b.add_argument("--name", required=True, help="registered model name")
    b.add_argument("--reason", required=True, help="why (recorded on the version)")
    b.set_defaults(func=_rollback)


def _load(args: argparse.Namespace):
    from medsynth.cli import Context
    from medsynth.components.promote import PromoteConfig

    ctx = Context(args)
    return ctx.project, ctx.stage(PromoteConfig, "promote")


def _promote(args: argparse.Namespace) -> int:
    from pathlib import Path

    from medsynth.cli import Context
    from medsynth.components.evaluate import EvaluateConfig
    from medsynth.components.features import FeaturesConfig, default_dir
    from medsynth.components.ingest import IngestConfig
    from medsynth.components.promote import PromoteConfig, extractor_sha256, run

    ctx = Context(args)
    dataset = _ingested_dataset(ctx) or ctx.stage(IngestConfig, "ingest").dataset
    # the evaluation must have used the project's current extractor (evaluate.extractor or the default)
    ev = ctx.stage(EvaluateConfig, "evaluate")
    ext_dir = Path(ev.extractor) if ev.extractor else default_dir(ctx.project, ctx.stage(FeaturesConfig, "features"))
    res = run(ctx.stage(PromoteConfig, "promote"), ctx.project, ctx.path(args.train, "train"),
              ctx.path(args.eval, "evaluate"), ctx.path(args.out, "promote"), dataset=dataset,
              extractor=extractor_sha256(ext_dir))
    state = "promoted to champion" if res.promoted else "not promoted"
    print(f"{res.name} v{res.version}: {state}: {res.reason}")
    print(f"champion is now v{res.champion_version}" if res.champion_version else "no champion yet")
    return 0


def _ingested_dataset(ctx) -> str:
    """The dataset name the ingest step recorded (``input-<name>`` for ``--input`` data), so a model
    trained on ad-hoc data is not registered under a bundled dataset's name; '' when unknown."""
    import json

    report = ctx.project.artifacts_path() / "ingest" / "ingest_report.json"
    try:
        return str(json.loads(report.read_text()).get("dataset") or "")
    except (OSError, ValueError):
        return ""


def _review(args: argparse.Namespace) -> int:
    from medsynth.components.review import decide, list_versions
    from medsynth.errors import ConfigError

    project, cfg = _load(args)
    if args.action == "list":
        rows = list_versions(project, args.name, only_pending=not args.all)
        if not rows:
            print("no versions waiting for review" if not args.all else "no registered versions")
            return 0
        print(f"{'model':32} {'ver':>4} {'aliases':20} {'review':9} grade (why) / gate")
        for v in rows:
            print(f"{v.name:32} {v.version:>4} {','.join(v.aliases) or '-':20} {v.review:9} {v.grade}")
            print(f"{'':68} gate: {v.gate}")
            if args.cards and v.card:
                print(v.card)
        return 0
    if not args.version or not args.name:
        raise ConfigError(f"review {args.action}: give VERSION and --name")
    print(decide(project, cfg, args.name, args.version, args.action == "approve", args.reason, args.reviewer))
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from medsynth.components.review import rollback

    project, cfg = _load(args)
    print(rollback(project, cfg, args.name, args.version, args.reason))
    return 0
