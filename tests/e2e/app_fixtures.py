"""Fixtures for the app tests: a generator trained and registered by the real path, and the extractor.

The generator is trained for a few steps with the training package's :class:`Trainer` on real CT
images (quality is not the point; the registry -> download -> load path is), logged as the MLflow
pyfunc model ``medsynth train`` logs (``components.train.log_generator_model``), registered and
gated by ``components/promote.py`` exactly as ``medsynth promote`` does.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data"
MODEL_NAME = "medsynth-ct-cgan"
CT_CLASSES = ["AbdomenCT", "ChestCT", "HeadCT"]
# gate-passing evaluation metrics (the evaluation component is not what these tests check)
METRICS = {"fid_domain": 12.5, "fid_domain_floor": 10.0, "kid_domain": 0.01, "c2st_auc": 0.55, "prdc_coverage": 0.8,
           # the gate's scale (16 px)
           "fid_domain_16px": 12.5, "fid_domain_16px_floor": 10.0, "c2st_auc_16px": 0.55, "prdc_coverage_16px": 0.8,
           "prdc_recall_16px": 0.8,
           "diversity_ms_ssim_generated": 0.22, "diversity_ms_ssim_real": 0.2, "privacy_near_copy_share": 0.0,
           "privacy_share_below_train_p5": 0.05, "cond_accuracy": 0.9, "cond_majority_share": 0.34,
           "utility_acc_real_plus_synth": 0.95, "utility_acc_real_dup": 0.94,
           # what the app reads beside them: the real controls, one warning sign, the floors' verdict
           "fid_domain_ratio_to_floor": 1.25, "c2st_auc_floor": 0.51, "prdc_coverage_floor": 0.85,
           "prdc_recall": 0.2, "prdc_recall_floor": 0.7, "gate_floors_passed": True}
PROTOCOL = {"extractor_sha256": "0" * 64, "data_hash": "test-ct"}  # both versions: FID-domain comparable


@pytest.fixture(scope="session")
def generator_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """generator.pt from a few training steps of a small cGAN on real 64 px CT images."""
    import torch

    from medsynth.training.loop import TrainData
    from medsynth.training.train_config import Device, TrainConfig
    from medsynth.training.trainer import Trainer

    with np.load(DATA / "mednist_ct_small.npz") as z:
        x, y = z["train_images"], z["train_labels"].reshape(-1)
    keep = np.concatenate([np.flatnonzero(y == c)[:32] for c in range(3)])
    data = TrainData(torch.from_numpy(x[keep][:, None].copy()), torch.from_numpy(y[keep].astype(np.int64)),
                     CT_CLASSES, ["CT"] * 3)
    cfg = TrainConfig(model="cgan", epochs=1, max_steps=2, batch_size=16, ngf=16, ndf=16, sample_count=4,
                      ema_decay=0.0, device=Device.CPU, threads=2, checkpoint_every=1000)
    out = tmp_path_factory.mktemp("train")
    Trainer(cfg, data, out, seed=0).fit()
    return out / "generator.pt"


@pytest.fixture(scope="session")
def extractor_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The domain feature extractor (components/features.py), trained briefly on the bundled real data."""
    from medsynth.components.features import FeaturesConfig, train_extractor
    from medsynth.config import load_stage, read_params
    from medsynth.readers import SourceConfig

    params = read_params(REPO / "params.yaml")
    datasets = {k: [load_stage(SourceConfig, "s", {"s": s}) for s in v]
                for k, v in params["ingest"]["datasets"].items()}
    out = tmp_path_factory.mktemp("features") / "domain_cnn"
    train_extractor(FeaturesConfig(per_class_train=40, epochs=1), datasets, DATA, out)
    return out


def register_generator(project, generator_file: Path, name: str = MODEL_NAME, metrics: dict | None = None) -> str:
    """Log generator.pt as a run artifact and register/gate it with the promote component; returns the version."""
    import mlflow

    from medsynth.components.promote import PromoteConfig, register
    from medsynth.components.train import log_generator_model
    from medsynth.tracking import setup_mlflow

    setup_mlflow(project)
    # logged as `medsynth train` logs it: a pyfunc model holding generator.pt
    with mlflow.start_run(run_name="train") as run:
        uri = log_generator_model(generator_file, 64, CT_CLASSES)
    res = register(project, PromoteConfig(), uri, name, dict(metrics or METRICS),
                   {"dataset": "ct", "classes": CT_CLASSES, "data_hash": "unknown", "run_id": run.info.run_id},
                   {"model": "cgan"}, project.artifacts_path() / "promote", protocol=PROTOCOL)
    return res.version


def install_extractor(project, extractor_dir: Path) -> None:
    shutil.copytree(extractor_dir, project.artifacts_path() / "features" / "domain_cnn")
