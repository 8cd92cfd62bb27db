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
    print(f"medsynth app: http://{args.address}:{args.port}  (registry: {redact(where)}; Ctrl+C stops it)",
          flush=True)
    return supervise(subprocess.Popen(cmd, env=env, preexec_fn=_die_with_parent))


FORWARDED = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT")
GRACE_S = 15.0  # after a forwarded signal, the server gets this long to stop before SIGKILL


def supervise(proc) -> int:
    """Wait for the server, forwarding stop signals to it; exit with it.

    ``kill <pid of medsynth app>`` (SIGTERM), SIGHUP from a closed terminal and Ctrl+C reach the
    Streamlit server too, so it stops and frees its port; a server that does not stop within
    ``GRACE_S`` is killed. Returns the server's exit code (128 + N when signal N ended it).
    """
    import signal
    import subprocess
    import time

    state: dict[str, float | None] = {"stopping_since": None}

    def forward(signum, _frame) -> None:
        if proc.poll() is None:
            proc.send_signal(signum)
        if state["stopping_since"] is None:
            state["stopping_since"] = time.monotonic()

    sigs = [getattr(signal, n) for n in FORWARDED if hasattr(signal, n)]
    previous = {s: signal.signal(s, forward) for s in sigs}
    try:
        while True:
            try:
                rc = proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                since = state["stopping_since"]
                if since is not None and time.monotonic() - since > GRACE_S:
                    proc.kill()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 128 - rc if rc < 0 else rc


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the server gets SIGTERM when ``medsynth app`` dies, even by SIGKILL (no orphan on the port)."""
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except OSError:
            pass
