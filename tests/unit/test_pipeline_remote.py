"""Submitting / scheduling on a cluster: bad input and unreachable hosts fail fast with one clear line."""

from __future__ import annotations

import socket
import time

import pytest

from medsynth.cli import main
from medsynth.errors import ConfigError
from medsynth.pipelines.remote import ClusterUnreachable, Connection, kfp_cron, probe


def _closed_port() -> int:
    # A port nothing listens on: bind, read the number, close.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("expr, want", [("0 3 * * *", "0 0 3 * * *"), ("0 0 3 * * 1-5", "0 0 3 * * 1-5")])
def test_cron_takes_crontab_or_kfp_form(expr: str, want: str) -> None:
    assert kfp_cron(expr) == want


@pytest.mark.parametrize("expr", ["", "daily", "* * *"])
def test_bad_cron_is_a_config_error(expr: str) -> None:
    with pytest.raises(ConfigError, match="--cron"):
        kfp_cron(expr)


def test_host_must_be_a_url() -> None:
    with pytest.raises(ConfigError, match="http"):
        probe(Connection(host="kfp.example:8080"))


def test_unreachable_host_fails_after_bounded_retries() -> None:
    host = f"http://127.0.0.1:{_closed_port()}"
    t0 = time.perf_counter()
    with pytest.raises(ClusterUnreachable, match="cannot be reached after 2 tries"):
        probe(Connection(host=host, timeout_s=1.0, attempts=2))
    assert time.perf_counter() - t0 < 10  # 2 tries, 1 s backoff: seconds, not minutes


@pytest.mark.parametrize("action", [["submit"], ["schedule", "--cron", "0 3 * * *"]])
def test_cli_reports_unreachable_host_on_one_line(action: list[str], project_home, repo, capsys) -> None:
    host = f"http://127.0.0.1:{_closed_port()}"
    rc = main(["pipeline", *action, "--host", host, "--timeout", "1", "--params", str(repo / "params.yaml")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0
    assert len(err) == 1 and err[0].startswith("medsynth: error: KFP at " + host)


def test_cli_bad_cron_fails_before_network(project_home, repo, capsys) -> None:
    rc = main(["pipeline", "schedule", "--cron", "every day", "--host", "http://127.0.0.1:1",
               "--params", str(repo / "params.yaml")])
    assert rc != 0 and "--cron" in capsys.readouterr().err
