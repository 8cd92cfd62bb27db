"""``medsynth app``: start the Streamlit app on this machine (127.0.0.1 unless told otherwise).

  medsynth app                                  embedded registry (SQLite under .medsynth/)
  medsynth app --tracking-uri http://mlflow:5000 --port 8600
  medsynth app --address 0.0.0.0                listen on every interface (behind an ingress)

The app serves the ``champion`` of each registered model by default; `make demo` registers one.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("app", help="start the Streamlit app: generate, evaluate, export and rate synthetic images",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default=None, help="params file (default: params.yaml or $MEDSYNTH_PARAMS)")
    p.add_argument("--port", type=int, default=8501, help="port to listen on (default: 8501)")
    p.add_argument("--address", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking/registry URI (default: $MLFLOW_TRACKING_URI or the embedded SQLite store)")
    p.add_argument("--open", action="store_true", help="open a browser tab")
    p.add_argument("--dry-run", action="store_true", help="print the streamlit command and exit")
    p.set_defaults(func=_run)


def command(args: argparse.Namespace) -> list[str]:
    """The ``streamlit run`` command line for these options."""
    import importlib.util
    import sys
    from pathlib import Path

    from medsynth.errors import ConfigError

    if not 1 <= args.port <= 65535:
        raise ConfigError(f"--port: must be in 1..65535, got {args.port}")
    spec = importlib.util.find_spec("medsynth.app")  # app/ in a checkout, medsynth/app in a wheel
    app_file = Path(next(iter(spec.submodule_search_locations or []), ".")) / "streamlit_app.py"
    if not app_file.is_file():
        raise ConfigError(f"{app_file}: the app file is missing from this installation")
    return [
        sys.executable, "-m", "streamlit", "run", str(app_file),
        "--server.address", args.address,
        "--server.port", str(args.port),
        "--server.headless", "false" if args.open else "true",
        "--server.fileWatcherType", "none",  # a served app does not reload on edits
        "--browser.gatherUsageStats", "false",  # no network calls home
        "--client.showErrorDetails", "none",  # errors are the app's own one-line messages
        "--client.toolbarMode", "minimal",
    ]


def _run(args: argparse.Namespace) -> int:
    import os
    import subprocess
    from pathlib import Path

    from medsynth.tracking import redact

    cmd = command(args)
    env = dict(os.environ)
    if args.tracking_uri:
        env["MLFLOW_TRACKING_URI"] = args.tracking_uri
    if args.params:
        env["MEDSYNTH_PARAMS"] = str(Path(args.params).resolve())
    env.setdefault("MEDSYNTH_HOME", str(Path.cwd()))
    if args.dry_run:
        prefix = f"MLFLOW_TRACKING_URI={redact(args.tracking_uri)} " if args.tracking_uri else ""
        print(prefix + " ".join(cmd))
        return 0
    where = env.get("MLFLOW_TRACKING_URI") or "the embedded registry under .medsynth/"
    print(f"medsynth app: http://{args.address}:{args.port}  (registry: {redact(where)}; Ctrl+C stops it)")
    try:
        return subprocess.run(cmd, env=env, check=False).returncode
    except KeyboardInterrupt:
        return 130
