"""The ``medsynth`` command line.

Each module in this package registers one command group with ``register(subparsers)``; the
heavy libraries (torch, mlflow, great_expectations, evidently) are imported inside the handlers,
so ``medsynth --help`` stays instant. Errors derived from :class:`MedsynthError` are printed as
one line (``medsynth: error: <what>: <why>``) with a non-zero exit code.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from medsynth import __version__
from medsynth.errors import MedsynthError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medsynth",
        description="Synthetic medical images: ingest, validate, preprocess, train, evaluate, "
        "promote, serve and monitor GAN generators, tracked in MLflow.",
    )
    parser.add_argument("--version", action="version", version=f"medsynth {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for mod in sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")):
        module = importlib.import_module(f"{__name__}.{mod}")
        module.register(sub)
    return parser


def add_common(p: argparse.ArgumentParser) -> None:
    """Options every step takes: the params file and typed overrides."""
    p.add_argument("--params", default=None, help="params file (default: params.yaml or $MEDSYNTH_PARAMS)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one params.yaml value, type-checked (repeatable), e.g. --set train.epochs=2",
    )


class Context:
    """What every step command starts from: params.yaml, the checked overrides and the project."""

    def __init__(self, args: argparse.Namespace, extra: dict[str, str] | None = None):
        from medsynth.config import check_all_overrides, parse_overrides, read_params
        from medsynth.project import load_project

        self.overrides = parse_overrides(args.overrides) | (extra or {})
        self.params = read_params(args.params)
        check_all_overrides(self.params, self.overrides)  # every section, not only this command's
        self.project = load_project(self.params, self.overrides)

    def stage(self, cls: type, section: str):
        """The typed config of one params.yaml section, with this command's overrides."""
        from medsynth.config import load_stage

        return load_stage(cls, section, self.params, self.overrides)

    def path(self, given: str | None, default: str):
        """``given`` as a Path, else ``<artifacts>/<default>``."""
        from pathlib import Path

        return Path(given) if given else self.project.artifacts_path() / default


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
        return int(rc or 0)
    except MedsynthError as exc:
        print(f"medsynth: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("medsynth: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - last resort: one line, traceback only on request
        if os.environ.get("MEDSYNTH_DEBUG"):
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"medsynth: error: {type(exc).__name__}: {first} (set MEDSYNTH_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
