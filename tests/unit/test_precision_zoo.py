"""Precision resolution per CPU capability (faked flags) and the shipped-champion manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medsynth.errors import InputError
from medsynth.hardware import cpu_flags, cpu_has_fast_bf16
from medsynth.training import zoo_manifest
from medsynth.training.train_config import Precision, resolve_precision


@pytest.mark.parametrize("flags, fast", [
    ({"avx2", "fma"}, False),  # AMD EPYC / AVX2 only: bf16 is emulated
    ({"avx512f", "avx512_bf16"}, False),  # AVX-512 BF16 without AMX: measured slower than fp32
    ({"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}, True),  # Sapphire Rapids: AMX tiles
])
def test_fast_bf16_needs_amx(flags, fast):
    assert cpu_has_fast_bf16(flags) is fast
    want = Precision.BF16 if fast else Precision.FP32
    assert resolve_precision(Precision.AUTO, "cpu", fast_bf16=fast) is want


def test_auto_is_bf16_on_cuda_and_explicit_choices_win():
    assert resolve_precision(Precision.AUTO, "cuda", fast_bf16=False) is Precision.BF16
    assert resolve_precision(Precision.FP32, "cpu", fast_bf16=True) is Precision.FP32
    assert resolve_precision(Precision.BF16, "cpu", fast_bf16=False) is Precision.BF16


def test_cpu_flags_reads_the_flags_line(tmp_path: Path):
    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nflags\t\t: fpu avx2 amx_bf16\n")
    assert cpu_flags(str(f)) == {"fpu", "avx2", "amx_bf16"}
    assert cpu_flags(str(tmp_path / "missing")) == set()


def test_trainer_logs_the_resolved_precision(tmp_path: Path):
    from medsynth.training.loop import TrainData
    from medsynth.training.train_config import TrainConfig
    from medsynth.training.trainer import Trainer

    x = torch.randint(0, 255, (64, 1, 32, 32), dtype=torch.uint8)
    cfg = TrainConfig(profile="smoke", model="dcgan", arch="resize", batch_size=16)
    t = Trainer(cfg, TrainData(x, torch.zeros(64, dtype=torch.long), ["a"]), tmp_path)
    assert t.precision is resolve_precision(Precision.AUTO, "cpu")
    assert (t.fmt == torch.channels_last) == (t.precision is Precision.BF16 or cfg.channels_last)


def _entry(tmp_path: Path) -> Path:
    folder = tmp_path / "ct"
    folder.mkdir(parents=True)
    (folder / "generator.pt").write_bytes(b"weights")
    (folder / "report.md").write_text("report")
    zoo_manifest.write_entry("ct", folder, {"model": "cgan"}, zoo_dir=tmp_path)
    return folder


def test_manifest_records_sha256_and_size_and_verifies(tmp_path: Path):
    folder = _entry(tmp_path)
    man = json.loads((tmp_path / zoo_manifest.MANIFEST).read_text())
    files = man["models"]["ct"]["files"]
    assert files["generator.pt"] == {"sha256": zoo_manifest.sha256_of(folder / "generator.pt"), "size": 7}
    assert man["total_bytes"] == 13
    assert zoo_manifest.get("ct", zoo_dir=tmp_path).sha256 == files["generator.pt"]["sha256"]


def test_tampered_or_missing_files_are_refused(tmp_path: Path):
    folder = _entry(tmp_path)
    (folder / "generator.pt").write_bytes(b"weightz")
    with pytest.raises(InputError, match="sha256/size differs"):
        zoo_manifest.get("ct", zoo_dir=tmp_path)
    (folder / "generator.pt").unlink()
    with pytest.raises(InputError, match="missing"):
        zoo_manifest.get("ct", zoo_dir=tmp_path)
    with pytest.raises(InputError, match="no shipped generator for dataset 'mri'"):
        zoo_manifest.get("mri", zoo_dir=tmp_path)


def test_shipped_zoo_matches_its_manifest():
    """Every file the repository ships under training/zoo/ has the recorded sha256 and size."""
    for name, entry in zoo_manifest.entries().items():
        zoo_manifest.verify(entry)
        # a GAN generator ships at ~4 MB, the ct latent diffusion model (2.7 M parameters, fp32) at 11.2 MB
        assert entry.size < 12_000_000, f"{name}: shipped generator is larger than a dozen MB"
    assert zoo_manifest.read_manifest()["total_bytes"] < 40_000_000, "the shipped zoo outgrew 40 MB"


def test_real_vs_synthetic_figure_has_a_row_per_class_and_says_synthetic(tmp_path):
    import numpy as np
    from PIL import Image

    from medsynth.pipelines.zoo_build import real_vs_synthetic
    from medsynth.training.loading import load_generator

    class Split:  # the two things the figure reads from PreparedData
        classes = ["AbdomenCT", "ChestCT", "HeadCT"]

        def split(self, name):
            rng = np.random.default_rng(0)
            return rng.uniform(-1, 1, (30, 1, 64, 64)).astype(np.float32), np.arange(30) % 3

    real_vs_synthetic(load_generator("zoo:ct"), Split(), tmp_path / "f.png", per_class=4)
    img = Image.open(tmp_path / "f.png")
    assert img.info["medsynth:synthetic"].startswith("contains synthetic images")
    assert img.height == 14 + 3 * 68  # band + one row per class (64 px + 2 px padding above and below)
    band = np.asarray(img.convert("RGB"))[2, img.width - 5]
    assert tuple(band) == (200, 30, 30)  # the red SYNTHETIC band over the generated half


def test_shipped_record_is_reused_only_under_the_same_policy_data_and_extractor(tmp_path, monkeypatch):
    """FID-domain from another extractor is another scale: the shipped entry is evaluated again, not compared."""
    from types import SimpleNamespace

    from medsynth import metric_keys as K
    from medsynth.components import evaluate
    from medsynth.components.gate import gate_policy
    from medsynth.pipelines import zoo_build
    from medsynth.training import loading

    gate = gate_policy()
    folder, art = tmp_path / "zoo" / "ct", tmp_path / "art"
    folder.mkdir(parents=True)
    (art / "preprocess").mkdir(parents=True)
    (art / "preprocess" / "meta.json").write_text(json.dumps({"data_hash": "d1"}))
    record = {K.GATE_POLICY_SHA256: gate.sha256(), K.PROTOCOL: {K.EXTRACTOR_SHA256: "e1"}, "recorded": True}
    (folder / "metrics.json").write_text(json.dumps(record))
    monkeypatch.setattr(zoo_manifest, "get", lambda ds: SimpleNamespace(folder=folder, info={"data_hash": "d1"}))
    monkeypatch.setattr(loading, "load_generator", lambda ref: ref)
    calls: list[str] = []
    monkeypatch.setattr(evaluate, "run", lambda *a, **k: calls.append(a[2]) or SimpleNamespace(metrics={"fresh": True}))
    logs: list[str] = []

    def shipped(extractor_sha: str) -> dict:
        ext = SimpleNamespace(meta={"sha256": extractor_sha})
        return zoo_build._shipped_metrics(None, lambda cls, sec: None, "ct", art, ext, gate, False, logs.append)

    assert shipped("e1") == record and not calls  # same policy, data and extractor: the record is used
    assert shipped("e2") == {"fresh": True} and calls == ["zoo:ct"]  # another extractor: evaluated again
    assert "extractor" in logs[-1]


def test_command_history_is_the_trained_states_own(tmp_path: Path):
    from medsynth.pipelines.zoo_build import command_history

    train = tmp_path / "train"
    assert command_history(train, False, "medsynth zoo build ct --minutes 95") == ["medsynth zoo build ct --minutes 95"]
    assert command_history(train, True, "medsynth zoo build ct --resume --minutes 5") == [
        "medsynth zoo build ct --minutes 95", "medsynth zoo build ct --resume --minutes 5"]
    assert json.loads((train / "commands.json").read_text())[-1].endswith("--minutes 5")
    # a fresh build starts a new history
    assert command_history(train, False, "medsynth zoo build ct") == ["medsynth zoo build ct"]
