"""A step that succeeded exits 0: no abort at interpreter shutdown (issue 14, item 1).

The cause was pandas' ``read_parquet(path)``: it hands pyarrow a Python file object, so the
buffers Arrow's worker threads release are ``PyBuffer``s whose destructor needs the GIL; when the
last one is dropped while the interpreter finalizes, the worker thread is ended with
``pthread_exit`` inside a ``noexcept`` destructor and libstdc++ aborts (exit 134). Parquet now goes
through ``medsynth.fileio.read_parquet``/``write_parquet`` (Arrow's native file I/O).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from medsynth.fileio import read_parquet, write_parquet

REPO = Path(__file__).resolve().parents[2]
RUNS = 10


def test_parquet_helpers_round_trip(tmp_path: Path) -> None:
    import pandas as pd

    df = pd.DataFrame({"id": ["a", "b"], "height": [28, 64], "std": [0.5, np.nan]})
    write_parquet(df, tmp_path / "m.parquet")
    back = read_parquet(tmp_path / "m.parquet")
    pd.testing.assert_frame_equal(back, df)
    assert list(read_parquet(tmp_path / "m.parquet", columns=["height"]).columns) == ["height"]


def test_no_parquet_io_through_python_file_objects() -> None:
    """The race is rare per run, so guard the cause itself: no pandas parquet I/O in the package."""
    offenders = []
    for folder in ("medsynth", "components", "monitoring", "training", "app", "pipelines"):
        for f in sorted((REPO / folder).rglob("*.py")):
            for n, line in enumerate(f.read_text().splitlines(), 1):
                if re.search(r"\bpd\.read_parquet\(|\.to_parquet\(", line):
                    offenders.append(f"{f.relative_to(REPO)}:{n}")
    assert not offenders, f"use medsynth.fileio.read_parquet/write_parquet: {offenders}"


def test_ingest_exits_zero_in_every_fresh_process(tmp_path: Path) -> None:
    """The reported command, run in fresh interpreters (two at a time, as a loaded machine does)."""
    with np.load(REPO / "data" / "pneumoniamnist.npz") as z:
        imgs, labels = z["test_images"][:60], z["test_labels"][:60]
    src = tmp_path / "batch.npz"
    np.savez(src, train_images=imgs, train_labels=labels)
    env = os.environ | {"MEDSYNTH_HOME": str(tmp_path), "MEDSYNTH_QUIET": "1"}
    failures = []
    for start in range(0, RUNS, 2):
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "medsynth", "ingest", "--input", str(src), "--modality", "XR",
                 "--classes", "normal,pneumonia", "--out", str(tmp_path / f"out{i}"), "--no-track"],
                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in range(start, start + 2)
        ]
        for p in procs:
            out, err = p.communicate(timeout=120)
            if p.returncode != 0 or "terminate called" in err or "ingested 60 images" not in out:
                failures.append((p.returncode, err.strip().splitlines()[-1:] if err.strip() else ""))
    assert not failures, f"{len(failures)} of {RUNS} runs failed: {failures}"
