"""Loading a generator from the registry runs no stored code (issue 14, item 5).

A generator logged by ``medsynth train`` is an MLflow pyfunc model (so the registry lists it) whose
``train_pyfunc.py`` MLflow would execute on ``mlflow.pyfunc.load_model``. medsynth loads it as
weights only: ``generator.pt`` is checked against the sha256 the training run recorded (a run tag in
the tracking database, out of reach of whoever can write to the artifact store) and read with
``torch.load(weights_only=True)`` into the installed package's networks. Real MLflow on SQLite.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from medsynth.errors import InputError


@pytest.fixture
def logged(project, tmp_path: Path) -> tuple[str, str]:
    """(run id, model URI) of a small conditional generator logged the way training logs it."""
    import mlflow
    import torch

    from medsynth.components.train import log_generator_model
    from medsynth.tracking import setup_mlflow
    from medsynth.training.kinds import build_generator
    from medsynth.training.models import ModelSpec
    from medsynth.training.sampler import generator_payload

    torch.manual_seed(0)
    spec = ModelSpec(kind="cgan", resolution=32, nz=16, ngf=8, ndf=8, num_classes=2, embed_dim=8)
    path = tmp_path / "generator.pt"
    torch.save(generator_payload(build_generator(spec), ["normal", "pneumonia"], ["XR", "XR"]), path)
    with mlflow.start_run(experiment_id=setup_mlflow(project)) as run:  # artifacts under the project
        uri = log_generator_model(path, 32, ["normal", "pneumonia"])
    return run.info.run_id, uri


def stored(project, name: str) -> list[Path]:
    """The artifact store's copies of a model file (what a bucket writer could change)."""
    found = [p for p in project.root.rglob(name) if ".medsynth" in p.parts]
    assert found, f"no stored {name}"
    return found


def test_registry_model_loads_as_weights_and_is_listed(project, logged):
    import mlflow

    from medsynth.training.loading import load_generator

    run_id, _ = logged
    gen = load_generator(f"runs:/{run_id}/generator")
    assert gen.classes == ["normal", "pneumonia"] and gen.generate(3, seed=1, labels=[0, 1, 1]).shape == (3, 1, 32, 32)
    mv = mlflow.register_model(f"runs:/{run_id}/generator", "medsynth-test")
    mlflow.MlflowClient().set_registered_model_alias("medsynth-test", "champion", mv.version)
    assert [m.name for m in mlflow.MlflowClient().search_registered_models()] == ["medsynth-test"]
    for uri in ("models:/medsynth-test@champion", f"models:/medsynth-test/{mv.version}"):
        assert load_generator(uri).resolution == 32
        assert load_generator(uri, project, bf16=True).resolution == 32


def test_a_tampered_stored_python_file_is_never_executed(project, logged, tmp_path):
    from medsynth.training.loading import load_generator

    run_id, _ = logged
    marker = tmp_path / "stored-code-ran"
    for f in stored(project, "train_pyfunc.py"):
        f.write_text(f"open({str(marker)!r}, 'w').write('pwned')\n" + f.read_text())
    load_generator(f"runs:/{run_id}/generator")
    load_generator(f"runs:/{run_id}/generator", project, bf16=True)
    assert not marker.exists()


def test_a_tampered_weight_file_fails_the_sha256_check(project, logged, capsys):
    import mlflow

    from medsynth.training.loading import load_generator

    run_id, _ = logged
    mv = mlflow.register_model(f"runs:/{run_id}/generator", "medsynth-test")
    for f in stored(project, "generator.pt"):
        f.write_bytes(f.read_bytes() + b"\0")
    with pytest.raises(InputError, match="stored file was changed after training; refusing to load it"):
        load_generator(f"runs:/{run_id}/generator")
    with pytest.raises(InputError, match="sha256"):
        load_generator(f"models:/medsynth-test/{mv.version}", project)


def test_a_model_without_a_recorded_sha256_is_refused(project, logged):
    import mlflow

    from medsynth.components.train import SHA256_TAG
    from medsynth.training.loading import load_generator

    run_id, _ = logged
    mlflow.MlflowClient().delete_tag(run_id, SHA256_TAG)
    with pytest.raises(InputError, match="records no medsynth.generator_sha256"):
        load_generator(f"runs:/{run_id}/generator")


def test_one_loader_takes_a_file_a_folder_or_a_shipped_champion(tmp_path):
    """Every face (CLI, app, pipelines, monitor, generate) loads through this one function."""
    import torch

    from medsynth.generator import GENERATOR_FILE
    from medsynth.training.kinds import build_generator
    from medsynth.training.loading import load_generator
    from medsynth.training.models import ModelSpec
    from medsynth.training.sampler import generator_payload

    torch.manual_seed(0)
    spec = ModelSpec(kind="dcgan", resolution=32, nz=16, ngf=8, ndf=8)
    torch.save(generator_payload(build_generator(spec), [], ["CT"]), tmp_path / GENERATOR_FILE)
    for ref in (tmp_path / GENERATOR_FILE, str(tmp_path)):
        gen = load_generator(ref)
        assert gen.classes == [] and gen.generate(2, seed=3).shape == (2, 1, 32, 32)
    shipped = load_generator("zoo:ct")
    assert shipped.classes == ["AbdomenCT", "ChestCT", "HeadCT"] and shipped.resolution == 64
    with pytest.raises(InputError, match=r"^nowhere/generator.pt: generator file not found \(give a generator.pt"):
        load_generator("nowhere/generator.pt")
    with pytest.raises(InputError, match="zoo"):
        load_generator("zoo:no-such-dataset")
