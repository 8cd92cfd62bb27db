"""Run by tests/model/test_ddp.py under ``torchrun --nproc_per_node=2``: a tiny cgan (or ldm) run
with gloo; every rank saves its final weights as rank<N>.pt beside (not inside) the run folder
(cgan: G and D; ldm: the served model and the trained one)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from medsynth.prepared import PreparedData
from medsynth.training.loop import TrainData
from medsynth.training.train_config import load_train_config
from medsynth.training.trainer import make_trainer

LDM = {"model": "ldm", "batch_size": 16, "ae_steps": 3, "max_steps": 3, "checkpoint_every": 3,
       "ae_channels": [8, 16, 16], "unet_channels": [16, 32], "sample_steps": 2, "sample_count": 4}


def main(prepared: str, out: str, model: str = "cgan") -> None:
    torch.set_num_threads(1)
    pd = PreparedData.load(prepared)
    x, y = pd.split_uint8("train")
    data = TrainData(torch.from_numpy(x), torch.from_numpy(y), pd.classes, pd.meta["modalities"])
    cfg = load_train_config({"train": LDM if model == "ldm" else {
        "model": "cgan", "ngf": 8, "ndf": 8, "batch_size": 16, "epochs": 1, "max_steps": 6, "checkpoint_every": 3,
        "diffaugment": ["translation"]}})
    trainer = make_trainer(cfg, data, out, seed=0)
    seen = trainer.sampler  # the shard of this rank, epoch 0
    seen.set_epoch(0)
    idx = sorted(iter(seen))
    res = trainer.fit()
    rank = dist.get_rank()
    second = trainer.G if trainer.D is None else trainer.D
    torch.save({"G": res.generator.state_dict(), "D": second.state_dict(), "indices": torch.tensor(idx),
                "world": dist.get_world_size()}, Path(out).parent / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:4])
    os._exit(0)
