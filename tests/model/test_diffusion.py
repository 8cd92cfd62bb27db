"""The latent diffusion kind (``train.model: ldm``) on small real CT data: it trains, a killed run
resumes to identical weights, sampling is deterministic in the seed, the served file loads weights-only,
and it goes through the same generate / interpolate / evaluate paths as a GAN."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from prepared_fixture import write_prepared

from medsynth.errors import ConfigError, TrainingError
from medsynth.generator import GENERATOR_FILE
from medsynth.imaging import to_unit_tensor
from medsynth.prepared import PreparedData
from medsynth.training.diffusion import DiffusionSampler, DiffusionSpec, LatentDiffusion
from medsynth.training.diffusion_trainer import DiffusionTrainer
from medsynth.training.loading import load_generator, load_sampler
from medsynth.training.loop import TrainData
from medsynth.training.train_config import load_train_config
from medsynth.training.trainer import make_trainer

# tiny widths, one thread: the behaviour, not the quality, is under test here
TINY = {"model": "ldm", "autoencoder": "kl", "batch_size": 16, "ae_steps": 3, "max_steps": 5, "log_every": 1, "threads": 1,
        "ae_channels": [8, 16, 16], "unet_channels": [16, 32], "sample_steps": 4, "sample_count": 6,
        "ema_decay": 0.9, "checkpoint_every": 2}


@pytest.fixture(scope="module")
def ct32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_prepared(tmp_path_factory.mktemp("prep") / "ct32", "ct", 32, per_class=20, eval_per_class=8)


def data_of(prepared: Path) -> TrainData:
    pd = PreparedData.load(prepared)
    x, y = pd.split_uint8("train")
    return TrainData(torch.from_numpy(x), torch.from_numpy(y), pd.classes, pd.meta["modalities"])


class Killed(Exception):
    pass


class Recorder:
    def __init__(self, kill_at: int | None = None):
        self.steps: list[tuple[int, dict]] = []
        self.grids: list[np.ndarray] = []
        self.kill_at = kill_at

    def on_step(self, step: int, metrics: dict) -> None:
        self.steps.append((step, metrics))
        if step == self.kill_at:
            raise Killed(step)

    def on_epoch_end(self, epoch: int, metrics: dict, grid: np.ndarray) -> None:
        self.grids.append(grid)


def test_trains_both_phases_and_writes_a_loadable_generator(ct32: Path, tmp_path: Path) -> None:
    cfg = load_train_config({"train": TINY})
    rec = Recorder()
    trainer = make_trainer(cfg, data_of(ct32), tmp_path / "run", seed=0, callback=rec)
    assert isinstance(trainer, DiffusionTrainer) and trainer.D is None
    res = trainer.fit()
    assert res.global_step == 3 + 5
    phases = [m["phase"] for _, m in rec.steps]
    assert phases == [0.0] * 3 + [1.0] * 5  # autoencoder first, then the denoiser
    assert all(np.isfinite(m.get("loss_ae", m.get("loss_diffusion"))) for _, m in rec.steps)
    assert len(rec.grids) == 2 and rec.grids[0].dtype == np.uint8  # reconstructions, then samples
    assert float(res.generator.latent_scale) != 1.0  # fixed from the trained encoder's latents
    gen = load_generator(tmp_path / "run")  # weights-only file -> a DiffusionSampler
    assert isinstance(gen, DiffusionSampler) and gen.classes == ["AbdomenCT", "ChestCT", "HeadCT"]
    payload = torch.load(tmp_path / "run" / GENERATOR_FILE, weights_only=True)
    assert payload["model_spec"]["kind"] == "ldm" and payload["model_spec"]["sample_steps"] == 4
    imgs = gen.generate(7, seed=3, labels=[0, 1, 2, 0, 1, 2, 0])
    assert imgs.shape == (7, 1, 32, 32) and imgs.dtype == np.float32 and imgs.min() >= -1 and imgs.max() <= 1
    # same seed, same images; another seed, other images; the in-memory model agrees with the file
    assert np.array_equal(imgs, gen.generate(7, seed=3, labels=[0, 1, 2, 0, 1, 2, 0]))
    assert not np.allclose(imgs, gen.generate(7, seed=4, labels=[0, 1, 2, 0, 1, 2, 0]))
    mem = DiffusionSampler(res.generator, gen.classes).generate(7, seed=3, labels=[0, 1, 2, 0, 1, 2, 0])
    assert np.allclose(mem, imgs, atol=1e-5)
    # interpolation: its end points are the seeds' own images
    path = gen.interpolate(3, 9, 4, label=1)
    assert path.shape == (4, 1, 32, 32)
    assert np.allclose(path[0], gen.generate(1, 3, labels=[1])[0], atol=1e-4)
    assert np.allclose(path[-1], gen.generate(1, 9, labels=[1])[0], atol=1e-4)
    with pytest.raises(ConfigError, match="out of range"):
        gen.generate(2, seed=0, labels=[0, 5])
    with pytest.raises(ConfigError, match="count"):
        gen.generate(0, seed=0)


def test_killed_run_resumes_to_identical_weights(ct32: Path, tmp_path: Path) -> None:
    # 60 images / batch 16 = 3 steps per epoch: the kill (step 6) falls in the denoiser phase, mid epoch,
    # after the snapshot of step 4; label dropout, noise and timesteps all draw randomness
    # with a learning-rate cooldown over the last 4 denoiser steps: a function of the step, so it resumes too
    cfg = load_train_config({"train": TINY | {"max_steps": 6, "lr_cooldown_steps": 4}})
    data = data_of(ct32)
    seen = Recorder()
    ref = DiffusionTrainer(cfg, data, tmp_path / "a", seed=5, callback=seen)
    ref_res = ref.fit()
    lrs = [m["lr_denoiser"] for _, m in seen.steps if m["phase"] == 1.0]
    warm = [cfg.lr_denoiser * min(1.0, (i + 1) / 200) for i in range(6)]
    assert np.allclose(lrs, [w * min(1.0, (6 - i) / 4) for i, w in enumerate(warm)], rtol=1e-5)
    with pytest.raises(Killed):
        DiffusionTrainer(cfg, data, tmp_path / "b", seed=5, callback=Recorder(kill_at=6)).fit()
    again = DiffusionTrainer(cfg, data, tmp_path / "b", seed=5)
    res = again.fit()
    assert res.resumed_from_step == 4 and res.global_step == ref_res.global_step == 9
    for a, b in ((ref.G, again.G), (ref_res.generator, res.generator), (ref.ema.model, again.ema.model)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k
    oa, ob = ref.opt_unet.state_dict()["state"], again.opt_unet.state_dict()["state"]
    assert all(torch.equal(oa[i]["exp_avg_sq"], ob[i]["exp_avg_sq"]) for i in oa)
    # a checkpoint of other settings is refused in one line
    with pytest.raises(TrainingError, match="ae_steps"):
        DiffusionTrainer(load_train_config({"train": TINY | {"ae_steps": 2}}), data, tmp_path / "b", seed=5).fit()


def test_bad_settings_and_files_fail_in_one_line(ct32: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unet_channels"):
        load_train_config({"train": TINY | {"unet_channels": [12, 32]}}).check()
    with pytest.raises(ConfigError, match="sample_steps"):
        load_train_config({"train": TINY | {"sample_steps": 0}}).check()
    with pytest.raises(ConfigError, match="lr_cooldown_steps"):
        load_train_config({"train": TINY | {"model": "cgan", "lr_cooldown_steps": 100}}).check()
    with pytest.raises(ConfigError, match="resolution 48"):
        LatentDiffusion(DiffusionSpec(resolution=48))
    bad = tmp_path / GENERATOR_FILE
    torch.save({"format": 1, "model_spec": {"kind": "ldm", "resolution": 32}, "state_dict": {"x": torch.zeros(1)},
                "classes": []}, bad)
    with pytest.raises(TrainingError, match="not a readable generator file"):
        load_sampler(bad)


@pytest.mark.parametrize("res", [28, 64])
def test_latent_grid_fits_every_resolution(res: int) -> None:
    spec = DiffusionSpec(resolution=res, num_classes=2, ae_channels=[8, 16, 16], unet_channels=[16, 32, 32],
                         sample_steps=2)
    net = LatentDiffusion(spec).eval()
    assert spec.latent_side == {28: 14, 64: 16}[res]
    imgs = DiffusionSampler(net, ["a", "b"]).generate(3, seed=0)
    assert imgs.shape == (3, 1, res, res)


@pytest.mark.parametrize("coder", ["patch", "cascade"])
def test_each_coder_trains_and_samples(ct32: Path, tmp_path: Path, coder: str) -> None:
    cfg = load_train_config({"train": TINY | {"autoencoder": coder, "max_steps": 3}})
    trainer = DiffusionTrainer(cfg, data_of(ct32), tmp_path / coder, seed=0)
    res = trainer.fit()
    # patch: nothing to train before the denoiser; cascade: the super-resolver trains first
    assert res.global_step == (3 if coder == "patch" else 6)
    assert (res.generator.ae is None) == (coder == "patch")
    gen = load_generator(tmp_path / coder)
    imgs = gen.generate(4, seed=1, labels=[0, 1, 2, 0])
    assert imgs.shape == (4, 1, 32, 32) and np.array_equal(imgs, gen.generate(4, seed=1, labels=[0, 1, 2, 0]))


def test_patch_coder_is_lossless_and_cascade_keeps_the_coarse_view(ct32: Path) -> None:
    from medsynth.imaging import resize_tensor

    x = torch.from_numpy(PreparedData.load(ct32).split("val")[0][:8]).float()
    patch = LatentDiffusion(DiffusionSpec(resolution=32, autoencoder="patch", unet_channels=[16, 32])).eval()
    assert patch.encode(x).shape == (8, 16, 8, 8) and torch.allclose(patch.reconstruct(x), x, atol=1e-6)
    casc = LatentDiffusion(DiffusionSpec(resolution=32, autoencoder="cascade", ae_channels=[8, 16],
                                         unet_channels=[16, 32])).eval()
    with torch.no_grad():
        z = casc.encode(x)
        out = casc.decode(z)  # an untrained super-resolver: back-projection still restores the 8 px view
    assert z.shape == (8, 1, 8, 8) and out.shape == x.shape
    err = (resize_tensor(out, 8, -1, 1) - resize_tensor(x, 8, -1, 1)).abs().mean()
    assert float(err) < 0.01


def test_class_norm_standardises_each_class_and_travels_with_the_weights(ct32: Path, tmp_path: Path) -> None:
    # ChestCT's coarse view varies several times less than HeadCT's: each class gets its own mean / std
    cfg = load_train_config({"train": TINY | {"autoencoder": "cascade", "max_steps": 2, "class_norm": True}})
    data = data_of(ct32)
    res = DiffusionTrainer(cfg, data, tmp_path / "cn", seed=0).fit()
    net = res.generator.eval()
    assert net.class_norm and net.spec.class_norm
    scale = net.class_scale.numpy()
    assert (scale > 0).all() and scale.max() / scale.min() > 1.5, scale  # measured per class, not one number
    x, y = to_unit_tensor(data.x), data.y.long()
    with torch.no_grad():
        z = net.encode(x, y)
        for c in range(3):  # every class's latents at zero mean, unit spread (stats of up to 512 images each)
            assert abs(float(z[y == c].mean())) < 0.05 and abs(float(z[y == c].std()) - 1) < 0.05
        assert torch.allclose(net.decode(z, y), net.reconstruct(x), atol=1e-5)  # the norm cancels
        with pytest.raises(ConfigError, match="class of every image"):
            net.encode(x[:2])
    # the statistics are buffers of the served weights-only file; generation needs no data
    gen = load_generator(tmp_path / "cn")
    assert torch.equal(gen.net.class_scale, net.class_scale) and torch.equal(gen.net.class_shift, net.class_shift)
    assert gen.generate(3, seed=2, labels=[0, 1, 2]).shape == (3, 1, 32, 32)
    # off (or unconditional): no per-class buffers, the one latent scale as before
    plain = LatentDiffusion(DiffusionSpec(resolution=32, num_classes=3, unet_channels=[16, 32]))
    assert not plain.class_norm and "class_scale" not in plain.state_dict()
    uncond = LatentDiffusion(DiffusionSpec(resolution=32, class_norm=True, unet_channels=[16, 32]))
    assert not uncond.class_norm and uncond.encode(x[:2]).shape == (2, 1, 8, 8)


def test_decoder_fine_tuning_changes_only_the_decoder_and_resumes_identically(ct32: Path, tmp_path: Path) -> None:
    # cascade: 3 super-resolver steps, 4 denoiser steps, then 4 adversarial steps of the super-resolver
    base = TINY | {"autoencoder": "cascade", "max_steps": 4, "checkpoint_every": 2}
    cfg = load_train_config({"train": base | {"decoder_steps": 4}})
    data = data_of(ct32)
    rec = Recorder()
    tuned = DiffusionTrainer(cfg, data, tmp_path / "tuned", seed=3, callback=rec)
    res = tuned.fit()
    assert res.global_step == 3 + 4 + 4
    assert [m["phase"] for _, m in rec.steps] == [0.0] * 3 + [1.0] * 4 + [2.0] * 4
    assert all(np.isfinite(m["loss_critic"]) and m["decoder_l1"] > 0 for _, m in rec.steps if m["phase"] == 2.0)
    # the same run without the phase: the same denoiser (EMA too), another decoder
    plain = DiffusionTrainer(load_train_config({"train": base}), data, tmp_path / "plain", seed=3).fit().generator
    for k, v in plain.unet.state_dict().items():
        assert torch.equal(v, res.generator.unet.state_dict()[k]), k
    assert any(not torch.equal(v, res.generator.ae.state_dict()[k]) for k, v in plain.ae.state_dict().items())
    gen = load_generator(tmp_path / "tuned")
    assert gen.generate(3, seed=1, labels=[0, 1, 2]).shape == (3, 1, 32, 32)
    # the snapshot at the denoiser's end is kept apart: the denoiser can be trained further from it
    from medsynth.training import checkpoint as ckpt
    from medsynth.training.diffusion_trainer import DENOISER_END

    kept = ckpt.load(tmp_path / "tuned" / "checkpoints" / DENOISER_END)
    assert kept["global_step"] == 7 and not kept["critic"]
    # killed in the phase (step 10, after the snapshot of step 8): resumed, critic and optimisers included
    with pytest.raises(Killed):
        DiffusionTrainer(cfg, data, tmp_path / "b", seed=3, callback=Recorder(kill_at=10)).fit()
    with pytest.raises(ConfigError, match="began after step 7"):  # the phase cannot move under a resumed run
        DiffusionTrainer(load_train_config({"train": base | {"max_steps": 5, "decoder_steps": 4}}), data,
                         tmp_path / "b", seed=3).fit()
    again = DiffusionTrainer(cfg, data, tmp_path / "b", seed=3)
    res_b = again.fit()
    assert res_b.resumed_from_step == 8
    for a, b in ((tuned.G, again.G), (tuned.critic, again.critic)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    # only the cascade has a super-resolver to fine-tune
    with pytest.raises(ConfigError, match="decoder_steps"):
        load_train_config({"train": TINY | {"decoder_steps": 10}}).check()
