"""Real local services for the server-mode tests: PostgreSQL 15, a moto S3 endpoint, an MLflow server.

Each helper is a context manager that starts the service, yields how to reach it and always stops it
(also when the test fails). PostgreSQL refuses to run as root, so as root its binaries run as the
``postgres`` user on a folder under /tmp that user owns (pytest's tmp_path is root-only).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

PG_BIN = Path(os.environ.get("MEDSYNTH_PG_BIN", "/usr/lib/postgresql/15/bin"))
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
          "AWS_EC2_METADATA_DISABLED": "true"}


class ServiceError(RuntimeError):
    """A service did not start; the message carries the tail of its log."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_missing_reason() -> str | None:
    """Why PostgreSQL cannot be used here, or None when it can."""
    if (PG_BIN / "initdb").is_file():
        return None
    if os.geteuid() == 0:
        return None  # as root (CI) a missing server is a failure, not a skip: `make system-deps` installs it
    return f"{PG_BIN}/initdb not found (install postgresql 15: infra/scripts/system-deps.sh as root)"


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


def _as_postgres(cmd: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    # initdb/pg_ctl refuse to run as root; as root they run as the `postgres` account
    full = ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd
    return subprocess.run(full, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


@contextlib.contextmanager
def postgres(user: str = "mlflow", db: str = "mlflowdb") -> Iterator[str]:
    """A throw-away PostgreSQL cluster on 127.0.0.1; yields ``postgresql+psycopg2://user@127.0.0.1:PORT/db``."""
    if not (PG_BIN / "initdb").is_file():
        raise ServiceError(f"{PG_BIN}/initdb not found: run `make system-deps` (installs postgresql 15)")
    base = Path(tempfile.mkdtemp(prefix="medsynth-pg-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    data, log, port = base / "data", base / "log", free_port()
    started = False
    try:
        r = _as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", user, "-E", "UTF8"], base)
        if r.returncode:
            raise ServiceError(f"initdb failed: {r.stderr[-2000:]}")
        r = _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-w", "-t", "60", "-l", str(log),
                          "-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {base}", "start"], base)
        started = True
        if r.returncode:
            raise ServiceError(f"pg_ctl start failed: {r.stderr[-1000:]}\n{_tail(log)}")
        r = subprocess.run([str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", user, db],
                           capture_output=True, text=True, timeout=60, check=False)
        if r.returncode:
            raise ServiceError(f"createdb failed: {r.stderr[-1000:]}\n{_tail(log)}")
        yield f"postgresql+psycopg2://{user}@127.0.0.1:{port}/{db}"  # SQLAlchemy 2.1 defaults to psycopg 3
    finally:
        if started:
            r = _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "30", "stop"], base,
                             timeout=60)
            if r.returncode and (data / "postmaster.pid").exists():
                with contextlib.suppress(OSError, ValueError):  # last resort: the postmaster's own pid
                    os.kill(int((data / "postmaster.pid").read_text().split()[0]), signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def moto_s3(bucket: str) -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 with one bucket; yields the endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        s3_client(endpoint).create_bucket(Bucket=bucket)
        yield endpoint
    finally:
        server.stop()


def s3_client(endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def mlflow_server(backend_uri: str, artifacts_destination: str, env: dict[str, str], log_dir: Path,
                  timeout: float = 90) -> Iterator[str]:
    """``mlflow server`` proxying artifacts to ``artifacts_destination``; yields its URL.

    Started in its own session (process group) and stopped by signalling the whole group: killing
    only the parent leaves its workers behind (STACK.md trap 7).
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = log_dir / "mlflow-server.log"
    cmd = [str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri", backend_uri,
           "--artifacts-destination", artifacts_destination, "--serve-artifacts",
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env},
                                start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not _healthy(url):
            if proc.poll() is not None:
                raise ServiceError(f"mlflow server exited with {proc.returncode}:\n{_tail(log)}")
            if time.monotonic() > deadline:
                raise ServiceError(f"mlflow server not healthy after {timeout:.0f}s:\n{_tail(log)}")
            time.sleep(0.5)
        yield url
    finally:
        stop_group(proc)


def stop_group(proc: subprocess.Popen, grace: float = 5) -> None:
    """SIGTERM the process group, SIGKILL it after ``grace`` seconds (uvicorn waits on idle keep-alive clients)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            continue
    # workers may outlive the leader for a moment: make sure nothing of the group is left
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
