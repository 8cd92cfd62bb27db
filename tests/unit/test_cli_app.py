"""`medsynth app`: listens on 127.0.0.1 unless told otherwise, passes the port and the registry URI on."""

from __future__ import annotations

from medsynth.cli import main


def test_app_defaults_to_localhost_and_passes_port_and_tracking_uri(capsys):
    assert main(["app", "--dry-run", "--port", "8612", "--tracking-uri", "http://user:pw@mlflow:5000"]) == 0
    out = capsys.readouterr().out
    assert "-m streamlit run" in out
    assert "--server.address 127.0.0.1" in out and "--server.port 8612" in out
    assert "--browser.gatherUsageStats false" in out and "--client.showErrorDetails none" in out
    assert out.startswith("MLFLOW_TRACKING_URI=http://user:***@mlflow:5000 ")
    assert "streamlit_app.py" in out


def test_app_bad_port_is_one_line_error(capsys):
    assert main(["app", "--dry-run", "--port", "70000"]) != 0
    assert "--port: must be in 1..65535" in capsys.readouterr().err


def test_stopping_medsynth_app_stops_streamlit_and_frees_the_port(tmp_path):
    """`kill <pid of medsynth app>` (SIGTERM) reaches the Streamlit server: the port is free after."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:  # a free port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = os.environ | {"MEDSYNTH_HOME": str(tmp_path), "MEDSYNTH_QUIET": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "medsynth", "app", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # the server is up when the port accepts a connection
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None, "medsynth app exited before listening"
            time.sleep(0.3)
        else:
            raise AssertionError("streamlit did not start listening")
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc in (0, 128 + signal.SIGTERM)
    with socket.socket() as s:  # nothing holds the port any more
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
