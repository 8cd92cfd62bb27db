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
