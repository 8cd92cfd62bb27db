"""Distributed data parallel, detected from torchrun's environment (never configured twice).

``torchrun`` sets RANK / LOCAL_RANK / WORLD_SIZE; without them the process trains alone. The
backend follows the device: NCCL on CUDA, gloo on CPU. Only the main process writes files and
talks to MLflow (:func:`is_main_process`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from medsynth.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_main_process() -> bool:
    """True on rank 0 of a torchrun job, and in any non-distributed process."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def pick_device(requested: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> the local CUDA device when there is one, else the CPU."""
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("train.device: cuda requested but no CUDA device is available; valid here: auto, cpu")
        return torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
    return torch.device("cpu")


def init_distributed(requested_device: str = "auto") -> DistInfo:
    """Join the torchrun process group when launched by torchrun; otherwise a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(requested_device, local)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank=rank, local_rank=local, world_size=world, device=device)


def all_mean(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of a small tensor over all ranks (a NaN on any rank reaches every rank)."""
    if info.enabled:
        values = values.clone()
        dist.all_reduce(values)
        values /= info.world_size
    return values


def all_mean_grads(params: list[torch.Tensor], info: DistInfo) -> None:
    """Average the gradients of ``params`` over all ranks in place (for modules trained without a DDP wrapper)."""
    if info.enabled:
        for p in params:
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= info.world_size


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
