"""Training behaviour on small real CT/X-ray data: conditional sampling follows its label,
MLflow logging and the served model, divergence stops cleanly, bad input fails in one line."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from prepared_fixture import write_prepared

from medsynth.errors import ConfigError, TrainingError
from medsynth.prepared import PreparedData
from medsynth.training.loading import load_sampler
from medsynth.training.loop import TrainData
from medsynth.training.sampler import GANSampler
from medsynth.training.train_config import load_train_config
from medsynth.training.trainer import Trainer

# one thread: tiny networks gain nothing from two, and OpenMP spinning on a busy machine costs 10x+
TINY = {"model": "cgan", "ngf": 8, "ndf": 8, "batch_size": 32, "epochs": 1, "max_steps": 4, "log_every": 1, "threads": 1}


@pytest.fixture(scope="module")
def ct32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_prepared(tmp_path_factory.mktemp("prep") / "ct32", "ct", 32, per_class=300, eval_per_class=60)


def train_data(prepared: Path) -> TrainData:
    pd = PreparedData.load(prepared)
    x, y = pd.split_uint8("train")
    return TrainData(torch.from_numpy(x), torch.from_numpy(y), pd.classes, pd.meta["modalities"])


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def small_classifier(x: torch.Tensor, y: torch.Tensor, n_classes: int) -> torch.nn.Module:
    """A tiny CNN trained on the real images (8 epochs, ~2 s): the judge of conditional samples."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 4, 2, 1), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 4, 2, 1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, n_classes))
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    for _ in range(8):
        for b in torch.randperm(len(y)).split(64):
            loss = torch.nn.functional.cross_entropy(net(x[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


@pytest.mark.slow
def test_conditional_sampling_above_chance(ct32: Path, tmp_path: Path) -> None:
    pd = PreparedData.load(ct32)
    xr, yr = (torch.from_numpy(a) for a in pd.split("train"))
    xv, yv = (torch.from_numpy(a) for a in pd.split("val"))
    clf = small_classifier(xr, yr, 3)
    with torch.no_grad():
        assert (clf(xv).argmax(1) == yv).float().mean() > 0.9  # the judge itself is reliable
    cfg = load_train_config({"train": {"model": "cgan", "ngf": 16, "ndf": 16, "batch_size": 32, "epochs": 10,
                                       "max_steps": 300, "ema_decay": 0.95, "checkpoint_every": 1000,
                                       "threads": 1}})
    res = Trainer(cfg, train_data(ct32), tmp_path / "run", seed=0).fit()
    sampler = GANSampler(res.generator, pd.classes)
    labels = np.arange(90) % 3
    imgs = sampler.generate(90, seed=1, labels=labels)
    assert imgs.shape == (90, 1, 32, 32) and imgs.min() >= -1 and imgs.max() <= 1
    assert np.array_equal(imgs, sampler.generate(90, seed=1, labels=labels))  # same seed, same images
    with torch.no_grad():
        pred = clf(torch.from_numpy(imgs)).argmax(1).numpy()
    per_label = [float((pred[labels == c] == c).mean()) for c in range(3)]
    assert min(per_label) > 0.5, f"per-label accuracy {per_label} (chance 0.33)"
    # the served file gives the same images
    again = load_sampler(tmp_path / "run" / "generator.pt")
    assert np.array_equal(imgs, again.generate(90, seed=1, labels=labels))
    assert again.label_index("headct") == 2


def test_component_tracks_and_serves_model(ct32: Path, project, tmp_path: Path) -> None:
    import mlflow
    from PIL import Image

    from medsynth.components.train import run
    from medsynth.training.loading import load_generator

    cfg = load_train_config({"train": {"profile": "smoke", "max_steps": 6, "log_every": 2, "sample_count": 9,
                                       "threads": 1}})
    out = project.artifacts_path() / "train"
    res = run(cfg, project, ct32, out)
    client = mlflow.MlflowClient()
    run_data = client.get_run(res.run_id).data
    for key in ("loss_d", "loss_g", "d_real", "d_fake", "lr_g", "images_per_s", "diversity_ratio", "mode_collapse"):
        assert key in run_data.metrics, key
    assert len(client.get_metric_history(res.run_id, "loss_d")) == 3  # steps 2, 4, 6
    assert run_data.params["model"] == "cgan" and run_data.tags["medsynth.data_hash"].startswith("test-ct")
    png = next((out / "samples").glob("synthetic_samples_epoch_*.png"))
    assert Image.open(png).text["synthetic"] == "true"
    assert any(a.path.startswith("samples") for a in client.list_artifacts(res.run_id))
    # a later step loads the model by URI and generates from seed, count and labels
    gen = load_generator(f"runs:/{res.run_id}/generator")
    assert gen.resolution == 32 and gen.classes == ["AbdomenCT", "ChestCT", "HeadCT"]
    assert gen.generate(4, seed=3, labels=[0, 1, 2, 2]).shape == (4, 1, 32, 32)
    version = mlflow.register_model(f"runs:/{res.run_id}/generator", "ct-test")
    client.set_registered_model_alias("ct-test", "champion", version.version)
    pyfunc = mlflow.pyfunc.load_model("models:/ct-test@champion")
    import pandas as pd

    out_imgs = pyfunc.predict(pd.DataFrame({"seed": [3], "count": [4], "label": [2]}))
    assert out_imgs.shape == (4, 1, 32, 32)
    assert np.allclose(out_imgs, gen.generate(4, seed=3, labels=[2, 2, 2, 2]))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(ct32: Path, tmp_path: Path) -> None:
    data = train_data(ct32)
    cfg = load_train_config({"train": {**TINY, "max_steps": 8, "checkpoint_every": 3}})
    seen: dict[str, str] = {}

    class Poison:  # after the snapshot at step 3, G's weights go NaN (as a diverged run's would)
        def on_step(self, step: int, metrics: dict) -> None:
            if step == 4:
                seen["hash"] = sha(trainer.ckpt_path)
                with torch.no_grad():
                    trainer.G.main[0].weight.fill_(float("nan"))

        def on_epoch_end(self, *args) -> None:
            pass

    trainer = Trainer(cfg, data, tmp_path / "run", seed=0, callback=Poison())
    with pytest.raises(TrainingError, match=r"step 5: non-finite loss .* last good checkpoint kept at"):
        trainer.fit()
    assert sha(trainer.ckpt_path) == seen["hash"]  # the step-3 snapshot, untouched
    assert not (tmp_path / "run" / "generator.pt").exists()
    snap = torch.load(trainer.ckpt_path, weights_only=True)
    assert snap["global_step"] == 3 and all(torch.isfinite(v).all() for v in snap["G"].values())


def test_bad_inputs_fail_in_one_line_and_keep_checkpoints(ct32: Path, tmp_path: Path) -> None:
    data = train_data(ct32)
    out = tmp_path / "run"
    Trainer(load_train_config({"train": TINY}), data, out, seed=0).fit()
    last = out / "checkpoints" / "last.pt"
    good = sha(last)
    # prepared artifact from another configuration (28 px pneumonia) into the same folder
    other = train_data(write_prepared(tmp_path / "pn28", "pneumonia", 28, per_class=40, eval_per_class=5))
    with pytest.raises(TrainingError, match=r"last.pt: checkpoint was trained on resolution=32 .* resolution=28"):
        Trainer(load_train_config({"train": TINY}), other, out, seed=0).fit()
    # other network width for the same data
    with pytest.raises(TrainingError, match=r"checkpoint has ngf=8 but this run asks for ngf=16"):
        Trainer(load_train_config({"train": {**TINY, "ngf": 16}}), data, out, seed=0).fit()
    assert sha(last) == good
    # corrupt checkpoint: clear message, file left in place
    last.write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingError, match=r"last.pt: corrupt or unreadable checkpoint"):
        Trainer(load_train_config({"train": TINY}), data, out, seed=0).fit()
    assert last.read_bytes() == b"not a checkpoint"
    with pytest.raises(TrainingError, match="generator file not found"):
        load_sampler(tmp_path / "missing.pt")
    # a resolution the networks cannot make
    x48 = torch.zeros(64, 1, 48, 48, dtype=torch.uint8)
    with pytest.raises(ConfigError, match="resolution 48: .* valid: 28, 32, 64"):
        Trainer(load_train_config({"train": TINY}), TrainData(x48, torch.zeros(64, dtype=torch.long), ["a"]), out)
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device; valid on CPU: fp32, bf16"):
        Trainer(load_train_config({"train": {**TINY, "precision": "fp16", "device": "cpu"}}), data, out)
    # labels out of range / for an unconditional model
    sampler = load_sampler(out / "generator.pt")
    with pytest.raises(ConfigError, match=r"labels: 3 is out of range; valid: 0..2"):
        sampler.generate(2, seed=0, labels=[0, 3])
    with pytest.raises(ConfigError, match="count: must be in 1..10000"):
        sampler.generate(100_000, seed=0)


def test_cli_one_line_errors(ct32: Path, project_home: Path, repo: Path, capsys: pytest.CaptureFixture) -> None:
    from medsynth.cli import main

    base = ["train", "--params", str(repo / "params.yaml"), "--in", str(ct32), "--out", str(project_home / "t"), "--no-track"]
    assert main([*base, "--model", "stylegan"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "medsynth: error: train.model: unknown model 'stylegan'; valid: cgan, dcgan, ldm"
    assert main([*base[:4], str(project_home / "nowhere"), *base[5:]]) == 2
    assert "not a preprocessed artifact" in capsys.readouterr().err
    # a smoke run through the CLI, dcgan (unconditional) this time
    assert main([*base, "--profile", "smoke", "--model", "dcgan", "--set", "train.max_steps=3", "--set", "train.threads=1"]) == 0
    assert "trained dcgan (smoke) for 3 steps" in capsys.readouterr().out
    assert load_sampler(project_home / "t" / "generator.pt").classes == []
    # and the latent diffusion kind through the same command (its own folder: another model's checkpoint is refused)
    ldm = [*base[:6], str(project_home / "l"), *base[7:]]
    assert main([*ldm, "--profile", "smoke", "--model", "ldm", "--set", "train.ae_steps=2", "--set", "train.max_steps=2",
                 "--set", "train.threads=1", "--set", "train.sample_steps=2"]) == 0
    assert "trained ldm (smoke) for 4 steps" in capsys.readouterr().out
    assert load_sampler(project_home / "l" / "generator.pt").classes == ["AbdomenCT", "ChestCT", "HeadCT"]


def test_multi_modality_cgan_conditions_on_modality_and_class(tmp_path: Path) -> None:
    # CT (3 classes) + breast MRI + chest X-ray in one conditional generator
    prep = write_prepared(tmp_path / "multi", "multi", 32, per_class=40, eval_per_class=4)
    data = train_data(prep)
    assert data.modalities == ["CT", "CT", "CT", "MR", "XR"]
    res = Trainer(load_train_config({"train": TINY}), data, tmp_path / "run", seed=0).fit()
    assert res.spec.num_classes == 5 and res.spec.class_modality == [0, 0, 0, 1, 2]
    sampler = load_sampler(tmp_path / "run" / "generator.pt")
    assert sampler.classes[3] == "MR/BreastMRI" and sampler.label_index("cxr") == 4
    assert sampler.generate(5, seed=0, labels=[0, 1, 2, 3, 4]).shape == (5, 1, 32, 32)


def test_mode_seeking_pairs_one_class_with_two_latents(ct32: Path, tmp_path: Path) -> None:
    """train.mode_seeking: the fake batch's halves share their labels (two z per class), the loss
    enters G's objective (a different G after the same steps) and bounds are checked."""
    data = train_data(ct32)
    seen: list[torch.Tensor] = []

    def trained(weight: float) -> dict[str, torch.Tensor]:
        trainer = Trainer(load_train_config({"train": {**TINY, "mode_seeking": weight}}), data,
                          tmp_path / f"ms{weight}", seed=0)
        g = trainer.G
        original = g.forward
        g.forward = lambda z, y=None: (seen.append(y.clone()), original(z, y))[1]  # type: ignore[method-assign]
        trainer.fit()
        return {k: v.clone() for k, v in g.state_dict().items()}

    plain = trained(0.0)
    n_plain = len(seen)
    ms = trained(1.0)
    labels = seen[n_plain]
    half = len(labels) // 2
    assert torch.equal(labels[:half], labels[half : 2 * half])
    assert not torch.equal(seen[0][:half], seen[0][half : 2 * half])  # off: independent labels
    assert any(not torch.equal(plain[k], ms[k]) for k in plain)
    with pytest.raises(ConfigError, match="train.mode_seeking"):
        load_train_config({"train": {**TINY, "mode_seeking": -1}}).check()
