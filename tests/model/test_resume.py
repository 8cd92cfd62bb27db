"""A run killed mid-epoch and restarted with the same settings reaches the same final weights
(G, D, EMA, optimiser moments) as an uninterrupted run on CPU with the same seed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from prepared_fixture import write_prepared

from medsynth.prepared import PreparedData
from medsynth.training.loop import TrainData
from medsynth.training.train_config import load_train_config
from medsynth.training.trainer import Trainer


class Killed(Exception):
    pass


class KillAt:
    """Stands for SIGKILL at step k: the process dies after step k, between snapshots."""

    def __init__(self, step: int):
        self.step = step

    def on_step(self, step: int, metrics: dict) -> None:
        if step == self.step:
            raise Killed(step)

    def on_epoch_end(self, *args) -> None:
        pass


def test_killed_run_resumes_to_identical_weights(tmp_path: Path) -> None:
    prep = write_prepared(tmp_path / "prep", "ct", 32, per_class=60, eval_per_class=5)
    pd = PreparedData.load(prep)
    x, y = pd.split_uint8("train")
    data = TrainData(torch.from_numpy(x), torch.from_numpy(y), pd.classes, pd.meta["modalities"])
    # 180 images / batch 32 = 5 steps per epoch, 3 epochs; snapshots every 3 steps and per epoch;
    # all options that consume randomness are on (DiffAugment, fake labels, EMA)
    cfg = load_train_config({"train": {"model": "cgan", "ngf": 8, "ndf": 8, "batch_size": 32, "epochs": 3,
                                       "checkpoint_every": 3, "log_every": 1, "ema_decay": 0.9, "threads": 1,
                                       "diffaugment": ["color", "translation", "cutout"]}})
    ref = Trainer(cfg, data, tmp_path / "a", seed=7)
    ref_res = ref.fit()
    with pytest.raises(Killed):
        Trainer(cfg, data, tmp_path / "b", seed=7, callback=KillAt(8)).fit()  # mid epoch 2
    snap = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)
    assert (snap["epoch"], snap["step_in_epoch"], snap["global_step"]) == (1, 1, 6)
    again = Trainer(cfg, data, tmp_path / "b", seed=7)
    res = again.fit()
    assert res.resumed_from_step == 6 and res.global_step == ref_res.global_step == 15
    for a, b in ((ref.G, again.G), (ref.D, again.D), (ref_res.generator, res.generator)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k
    oa, ob = ref.opt_g.state_dict()["state"], again.opt_g.state_dict()["state"]
    assert all(torch.equal(oa[i]["exp_avg_sq"], ob[i]["exp_avg_sq"]) for i in oa)
    # a finished run started again does nothing more and keeps its weights
    done = Trainer(cfg, data, tmp_path / "b", seed=7).fit()
    assert done.global_step == 15 and torch.equal(done.generator.main[0].weight, res.generator.main[0].weight)
