"""The demo's champion/challenger path: a shipped generator becomes a tracked, gateable candidate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from prepared_fixture import write_prepared

from medsynth.training import zoo_manifest
from medsynth.training.kinds import build_generator
from medsynth.training.models import ModelSpec
from medsynth.training.sampler import generator_payload

CLASSES = ["AbdomenCT", "ChestCT", "HeadCT"]


def _ship(zoo_dir: Path, data_hash: str) -> Path:
    torch.manual_seed(0)
    net = build_generator(ModelSpec(kind="cgan", arch="resize", resolution=32, ngf=8, ndf=8, num_classes=3)).eval()
    folder = zoo_dir / "ct"
    folder.mkdir(parents=True)
    torch.save(generator_payload(net, CLASSES, ["CT"] * 3, {"global_step": 5}), folder / "generator.pt")
    (folder / "MODEL_CARD.md").write_text("# Shipped generator: ct\n")
    zoo_manifest.write_entry("ct", folder, {"model": "cgan", "arch": "resize", "global_step": 5, "resolution": 32,
                                   "classes": CLASSES, "data_hash": data_hash, "gate_floors_passed": False,
                                   "command": "medsynth zoo build ct"}, zoo_dir=zoo_dir)
    return folder


@pytest.fixture
def prepared(tmp_path: Path) -> Path:
    return write_prepared(tmp_path / "prep", "ct", resolution=32, per_class=20, eval_per_class=5)


def test_shipped_generator_becomes_a_tracked_training_run(project, tmp_path, prepared, monkeypatch):
    from mlflow.tracking import MlflowClient

    from medsynth.components.train import SHA256_TAG, import_shipped
    from medsynth.fileio import sha256_file
    from medsynth.training.loading import load_generator

    data_hash = json.loads((prepared / "meta.json").read_text())["data_hash"]
    folder = _ship(tmp_path / "zoo", data_hash)
    monkeypatch.setattr(zoo_manifest, "ZOO_DIR", tmp_path / "zoo")
    res = import_shipped(project, "ct", tmp_path / "champ", prepared)
    assert res is not None and res.model_uri and res.global_step == 5  # the gate, not the zoo, decides champion
    summary = json.loads((tmp_path / "champ" / "train_summary.json").read_text())
    assert summary["run_id"] == res.run_id and summary["classes"] == CLASSES and summary["source"] == "zoo:ct"
    run = MlflowClient().get_run(res.run_id)
    assert run.data.params["model"] == "cgan" and run.data.tags["medsynth.zoo"] == "ct"
    assert run.data.tags["medsynth.data_hash"] == data_hash
    assert run.data.tags[SHA256_TAG] == sha256_file(folder / "generator.pt")
    gen = load_generator(res.model_uri)  # the hash-checked, weights-only loader
    assert gen.classes == CLASSES and gen.generate(3, seed=0).shape == (3, 1, 32, 32)


def test_nothing_registered_without_a_usable_shipped_model(project, tmp_path, prepared, monkeypatch):
    from medsynth.components.train import import_shipped

    monkeypatch.setattr(zoo_manifest, "ZOO_DIR", tmp_path / "zoo")
    assert import_shipped(project, "ct", tmp_path / "a", prepared) is None  # none shipped
    _ship(tmp_path / "zoo", "another-data-hash")
    assert import_shipped(project, "ct", tmp_path / "b", prepared) is None  # trained on other data


def test_tampered_shipped_weights_are_refused(project, tmp_path, prepared, monkeypatch):
    from medsynth.components.train import import_shipped
    from medsynth.errors import InputError

    data_hash = json.loads((prepared / "meta.json").read_text())["data_hash"]
    folder = _ship(tmp_path / "zoo", data_hash)
    monkeypatch.setattr(zoo_manifest, "ZOO_DIR", tmp_path / "zoo")
    with open(folder / "generator.pt", "ab") as f:
        f.write(b"\0")
    with pytest.raises(InputError, match="sha256/size differs"):
        import_shipped(project, "ct", tmp_path / "champ", prepared)
