"""Submit the training pipeline to a Kubeflow Pipelines cluster, once or on a schedule.

The host is probed first with short, bounded retries, so a wrong URL or a cluster that is down
gives one clear line in seconds instead of the KFP client's long internal retry loops. The pipeline
is compiled afresh (optionally with a registry prefix for the images) and the arguments are resolved
from params.yaml on this machine; a recurring run stores them, so every scheduled run uses the
configuration it was scheduled with.
"""

from __future__ import annotations

import os
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medsynth.errors import ConfigError, MedsynthError

HEALTHZ = "/apis/v2beta1/healthz"


class ClusterUnreachable(MedsynthError):
    """The KFP API server did not answer."""


@dataclass(frozen=True)
class Connection:
    host: str
    namespace: str | None = None
    token: str | None = None  # bearer token (multi-user Kubeflow); default $KFP_TOKEN
    timeout_s: float = 5.0
    attempts: int = 3


def probe(conn: Connection) -> None:
    """Check that ``conn.host`` answers HTTP, retrying ``attempts`` times with a short backoff.

    Any HTTP status counts as reachable (an auth error is reported later by the API call itself).

    Raises:
        ConfigError: the host is not an http(s) URL.
        ClusterUnreachable: no answer after the bounded retries.
    """
    if not conn.host.startswith(("http://", "https://")):
        raise ConfigError(f"--host {conn.host!r}: expected an http(s):// URL of the KFP API, e.g. http://127.0.0.1:8080")
    url = conn.host.rstrip("/") + HEALTHZ
    last = ""
    for attempt in range(1, conn.attempts + 1):
        try:
            with urllib.request.urlopen(url, timeout=conn.timeout_s):  # noqa: S310 - URL is checked above
                return
        except urllib.error.HTTPError:
            return  # it answered
        except (urllib.error.URLError, OSError) as exc:
            last = str(getattr(exc, "reason", exc))
        if attempt < conn.attempts:
            time.sleep(min(2.0 ** (attempt - 1), 4.0))
    raise ClusterUnreachable(
        f"KFP at {conn.host}: cannot be reached after {conn.attempts} tries ({last}); "
        "check --host (e.g. `kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80`)"
    )


def client(conn: Connection) -> Any:
    """A ``kfp.Client`` for a host that has answered :func:`probe`."""
    import kfp

    probe(conn)
    token = conn.token or os.environ.get("KFP_TOKEN")
    kwargs: dict[str, Any] = {"host": conn.host.rstrip("/"), "existing_token": token}
    if conn.namespace:
        kwargs["namespace"] = conn.namespace
    try:
        return kfp.Client(**kwargs)
    except Exception as exc:  # noqa: BLE001 - kfp raises many types for auth/transport errors
        raise ClusterUnreachable(f"KFP at {conn.host}: {_first(exc)}") from None


def _first(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def kfp_cron(expr: str) -> str:
    """A cron expression in KFP's 6-field form (seconds first); 5-field crontab input gets ``0`` seconds.

    Raises:
        ConfigError: not 5 or 6 fields.
    """
    fields = expr.split()
    if len(fields) == 5:
        return "0 " + " ".join(fields)
    if len(fields) == 6:
        return " ".join(fields)
    raise ConfigError(f"--cron {expr!r}: expected 5 fields (min hour day month weekday) or 6 (with seconds first)")


def _package(registry: str | None, tmp: str) -> str:
    from medsynth.pipelines.training_pipeline import compile_pipeline

    return str(compile_pipeline(Path(tmp) / "pipeline.yaml", registry=registry))


def submit(conn: Connection, arguments: dict[str, str], run_name: str | None = None,
           experiment: str = "medsynth", registry: str | None = None, enable_caching: bool = True) -> str:
    """Start one run of the pipeline on the cluster; returns the run id."""
    kfp_client = client(conn)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            res = kfp_client.create_run_from_pipeline_package(
                _package(registry, tmp), arguments=arguments, run_name=run_name,
                experiment_name=experiment, namespace=conn.namespace, enable_caching=enable_caching)
        except Exception as exc:  # noqa: BLE001
            raise ClusterUnreachable(f"KFP at {conn.host}: submitting the run failed ({_first(exc)})") from None
    return str(res.run_id)


def schedule(conn: Connection, cron: str, arguments: dict[str, str], name: str = "medsynth-retrain",
             experiment: str = "medsynth", registry: str | None = None, enable_caching: bool = False,
             max_concurrency: int = 1) -> str:
    """Create a recurring run (KFP cron, no catch-up, one at a time); returns its id.

    Caching is off by default: a scheduled run exists to pick up new data, which ingest reads from
    outside the pipeline, so a cache hit would silently train on yesterday's data.
    """
    cron6 = kfp_cron(cron)
    kfp_client = client(conn)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            exp = kfp_client.create_experiment(experiment, namespace=conn.namespace)
            job = kfp_client.create_recurring_run(
                experiment_id=exp.experiment_id, job_name=name, cron_expression=cron6,
                max_concurrency=max_concurrency, no_catchup=True, params=arguments,
                pipeline_package_path=_package(registry, tmp), enable_caching=enable_caching)
        except Exception as exc:  # noqa: BLE001
            raise ClusterUnreachable(f"KFP at {conn.host}: creating the recurring run failed ({_first(exc)})") from None
    return str(job.recurring_run_id)
