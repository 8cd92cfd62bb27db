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
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
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
    start, end = markers(name)
    block = block.strip()
    if block.startswith(section):  # a rendered section may carry its own heading
        block = block[len(section):].strip()
    if not block.startswith(start):
        block = f"{start}\n{block.strip()}\n{end}"
    body = doc.read_text() if doc.exists() else "# Benchmarks\n"
    if start in body and end in body:
        i, j = body.index(start), body.index(end) + len(end)
        body = body[:i] + block + body[j:]
    elif section in body:
        i = body.index(section) + len(section)
        body = body[:i] + "\n\n" + block + body[i:]
    else:
        body = body.rstrip("\n") + f"\n\n{section}\n\n{block}\n"
    doc.write_text(body)
