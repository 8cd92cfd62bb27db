"""What every benchmark script shares: the machine line, timing, and its block in BENCHMARKS.md.

Each script owns one marked block (``<!-- bench_NAME:start -->`` ... ``<!-- bench_NAME:end -->``)
under its own ``## Section`` heading; rerunning a script replaces only its block.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def markers(name: str) -> tuple[str, str]:
    return f"<!-- bench_{name}:start -->", f"<!-- bench_{name}:end -->"


def machine() -> str:
    """Core count, CPU model and Python version (the line every figure carries)."""
    from medsynth.training.resources import cpu_model

    cpu = cpu_model()
    return f"{os.cpu_count()} cores (nproc), {cpu}, Python {platform.python_version()}"


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, wall seconds, CPU seconds of this process) of ``fn()``."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def write_section(doc: Path, block: str, name: str, section: str) -> None:
    """Put ``block`` (which starts and ends with this script's markers) into ``doc``.

    Replaces the script's previous block; else inserts it under ``section``; else appends the
    section with the block.
    """
    from medsynth.fileio import put_block

    start, end = markers(name)
    put_block(doc, block, start, end, section, default_title="# Benchmarks\n")
