"""DDP through torchrun: 2 CPU processes with gloo shard the data, only rank 0 writes, and the
weights stay identical across ranks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from prepared_fixture import write_prepared


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["cgan", "ldm"])
def test_two_process_gloo(tmp_path: Path, model: str) -> None:
    prep = write_prepared(tmp_path / "prep", "ct", 32, per_class=100, eval_per_class=5)
    worker = Path(__file__).with_name("ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MEDSYNTH_QUIET": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", str(worker), str(prep), str(tmp_path / "run"), model]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["world"] == r1["world"] == 2
    # the sampler shards the data: disjoint halves of the 300 images
    i0, i1 = set(r0["indices"].tolist()), set(r1["indices"].tolist())
    assert len(i0) == len(i1) == 150 and not (i0 & i1)
    for net in ("G", "D"):
        for k in r0[net]:
            assert torch.equal(r0[net][k], r1[net][k]), f"{net}.{k} differs across ranks"
    # only rank 0 wrote: one snapshot, one generator, no stray temporary files
    files = sorted(p.relative_to(tmp_path / "run").as_posix() for p in (tmp_path / "run").rglob("*") if p.is_file())
    assert files == ["checkpoints/last.pt", "generator.pt"]
    snap = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert snap["world_size"] == 2 and snap["global_step"] == 6  # ldm: 3 autoencoder + 3 denoiser steps
