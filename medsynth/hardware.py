"""What this machine's CPU can do: feature flags, and whether bfloat16 pays here (AMX)."""

from __future__ import annotations


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str]:
    """The CPU feature flags the kernel reports (empty when unknown)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_fast_bf16(flags: set[str] | None = None) -> bool:
    """True when bfloat16 is faster than fp32 on this CPU: it has AMX (``amx_bf16`` tiles).

    AVX-512 BF16 alone is not enough: on a 2-core Xeon with ``avx512_bf16`` but no AMX a bf16
    matmul ran at 0.6x the fp32 one and a training step was slower in bf16 (docs/BENCHMARKS.md);
    with AMX bf16 + channels_last trained 2.4x faster than fp32.
    """
    flags = cpu_flags() if flags is None else flags
    return "amx_bf16" in flags
