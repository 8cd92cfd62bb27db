"""What a training run costs: peak memory and the device it ran on.

Peak memory is measured the way each device allows: on CUDA from the caching allocator
(``torch.cuda.max_memory_allocated``, reset at the start); on CPU by sampling this process's
resident set size (RSS) in a background thread, reported both as the peak and as the growth over
the RSS when training started (what training itself added: models, optimiser state, activations).
"""

from __future__ import annotations

import os
import threading
from typing import Any

import torch

MIB = 1024 * 1024


def _rss_bytes() -> int:
    try:
        import psutil

        return int(psutil.Process(os.getpid()).memory_info().rss)
    except ImportError:  # pragma: no cover - psutil comes with mlflow; /proc is the fallback
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Context manager measuring peak memory over its body on ``device``.

    After exit, :meth:`metrics` gives ``peak_memory_mib`` (CUDA: peak allocated; CPU: peak RSS)
    and ``memory_added_mib`` (CUDA: the same; CPU: peak RSS minus RSS at entry), plus the kind.
    """

    def __init__(self, device: torch.device | str = "cpu", interval_s: float = 0.05) -> None:
        self.device = torch.device(device)
        self.interval_s = interval_s
        self.start = self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def kind(self) -> str:
        return "cuda_max_allocated" if self.device.type == "cuda" else "cpu_rss"

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
            return self
        self.start = self.peak = _rss_bytes()
        self._thread = threading.Thread(target=self._sample, name="peak-rss", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, _rss_bytes())

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, _rss_bytes())

    def metrics(self) -> dict[str, float]:
        added = self.peak if self.device.type == "cuda" else self.peak - self.start
        return {"peak_memory_mib": self.peak / MIB, "memory_added_mib": max(added, 0) / MIB}


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (else platform's guess)."""
    import platform

    try:
        with open("/proc/cpuinfo") as fh:
            model = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "")
    except OSError:
        model = ""
    return model or platform.processor() or platform.machine()


def device_name(device: torch.device | str) -> str:
    """A human name of ``device``: the GPU model, or the CPU model with its logical core count."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {cpu_model()} x{os.cpu_count()}, {torch.get_num_threads()} threads"
