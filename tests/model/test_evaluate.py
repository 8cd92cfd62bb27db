"""Behaviour of the evaluation on real bundled data (PneumoniaMNIST, 28 px, 2 classes).

Until a trained GAN is at hand, two generators with known answers stand in for one:
held-out real images (scores must sit near the real-vs-real floor, no near-copies) and degenerate
ones (noise, constant: scores must be clearly worse); the training images themselves must be
flagged as copies by the privacy check.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medsynth.components import features
from medsynth.components.evaluate import EvaluateConfig, HeldOutReal, compute, run
from medsynth.errors import InputError
from medsynth.prepared import PreparedData

REPO = Path(__file__).resolve().parents[2]
GATE_KEYS = ["fid_domain", "kid_domain_mean", "fid_domain_floor", "prdc_precision", "prdc_recall",
             "prdc_density", "prdc_coverage", "nn_ssim_mean", "nn_psnr_mean", "diversity_ms_ssim_generated",
             "diversity_ms_ssim_real", "cond_accuracy", "privacy_near_copy_share", "unstable"]
FAST = dict(n_generated=200, min_samples=150, utility=False, kid_subsets=10, diversity_pairs=100, privacy_max_train_queries=500)


def make_prepared(root: Path, npz: Path, classes: list[str]) -> Path:
    """A prepared artifact (medsynth/prepared.py layout) straight from a MedMNIST-style npz."""
    z = np.load(npz)
    arrays = {}
    for s in ("train", "val", "test"):
        y = z[f"{s}_labels"].reshape(-1).astype(np.int64)
        arrays.update({f"{s}_x": z[f"{s}_images"][:, None], f"{s}_y": y,
                       f"{s}_ids": np.array([f"{s}-{i}" for i in range(len(y))])})
    root.mkdir(parents=True)
    np.savez(root / "data.npz", **arrays)
    (root / "meta.json").write_text(json.dumps({"resolution": int(arrays["train_x"].shape[-1]),
                                                "classes": classes, "data_hash": "pneumoniamnist-test"}))
    return root


@pytest.fixture(scope="module")
def extractor(tmp_path_factory):
    """A tiny domain extractor over all 7 bundled classes (seconds on CPU), trained once per module."""
    from medsynth.components.ingest import IngestConfig
    from medsynth.config import load_stage, read_params

    params = read_params(REPO / "params.yaml")
    cfg = features.FeaturesConfig(resolution=32, per_class_train=100, epochs=3, batch_size=32, width=8, feature_dim=32)
    out = tmp_path_factory.mktemp("features") / "domain_cnn"
    ingest = load_stage(IngestConfig, "ingest", params)
    features.train_extractor(cfg, ingest.datasets, REPO / "data", out)
    return features.load_extractor(out)


@pytest.fixture(scope="module")
def pneumonia(tmp_path_factory) -> PreparedData:
    root = make_prepared(tmp_path_factory.mktemp("prep") / "pneumonia", REPO / "data" / "pneumoniamnist.npz",
                         ["normal", "pneumonia"])
    return PreparedData.load(root)


class Noise:
    """A degenerate generator: uniform noise (or a constant image), conditional on paper only."""

    resolution = 28
    classes = ["normal", "pneumonia"]

    def __init__(self, constant: bool = False) -> None:
        self.constant = constant

    def generate(self, n, seed, labels=None, truncation=1.0):
        if self.constant:
            return np.zeros((n, 1, 28, 28), np.float32)
        return np.random.default_rng(seed).uniform(-1, 1, (n, 1, 28, 28)).astype(np.float32)


@pytest.fixture(scope="module")
def scores(extractor, pneumonia):
    cfg = EvaluateConfig(**FAST)
    out = {name: compute(cfg, gen, pneumonia, extractor, conditional=True)[0] for name, gen in [
        ("val", HeldOutReal(pneumonia, "val")), ("train", HeldOutReal(pneumonia, "train")),
        ("noise", Noise()), ("constant", Noise(constant=True))]}
    uncond = EvaluateConfig(**{**FAST, "utility": True})
    held = HeldOutReal(pneumonia, "val", conditional=False)
    out["unconditional"] = compute(uncond, held, pneumonia, extractor, conditional=False)[0]
    no_pseudo = EvaluateConfig(**{**FAST, "utility": True, "utility_pseudo_labels": False})
    out["unconditional_no_pseudo"] = compute(no_pseudo, held, pneumonia, extractor, conditional=False)[0]
    return out


def test_unconditional_generator_gets_pseudo_labelled_utility(scores):
    m = scores["unconditional"]
    assert not m["conditional"] and "cond_accuracy" not in m
    assert m["fid_domain"] == pytest.approx(scores["val"]["fid_domain"], rel=0.5)  # same kind of images
    # real val images labelled by classifier (a): synthetic-only training still learns the task
    assert m["utility_pseudo_labels"] == 1.0 and any("pseudo-labels" in note for note in m["notes"])
    assert m["utility_acc_synth_only"] > 0.6 and m["utility_auc_synth_only"] > 0.7
    off = scores["unconditional_no_pseudo"]
    assert "utility_acc_real" not in off and any("utility skipped" in note for note in off["notes"])


def test_held_out_real_scores_near_the_real_floor(scores):
    m = scores["val"]
    assert m["fid_domain"] < 3 * m["fid_domain_floor"] + 1.0
    assert m["prdc_precision"] > 0.7 and m["prdc_coverage"] > 0.7
    assert abs(m["diversity_ms_ssim_generated"] - m["diversity_ms_ssim_real"]) < 0.1
    assert m["cond_accuracy"] > 0.7 and m["cond_in_domain_share"] > 0.8
    # PneumoniaMNIST itself holds a few exact val/train duplicates (about 1.5 %): not more
    assert m["privacy_near_copy_share"] < 0.05 and 0.7 < m["privacy_nn_median_ratio"] < 1.3
    assert m["unstable"] is False and "fid_domain_class_normal" in m


def test_degenerate_generators_score_clearly_worse(scores):
    real = scores["val"]
    for name in ("noise", "constant"):
        m = scores[name]
        assert m["fid_domain"] > 10 * max(real["fid_domain"], real["fid_domain_floor"]), name
        assert m["kid_domain_mean"] > 10 * max(real["kid_domain_mean"], 1e-3), name
        assert m["prdc_coverage"] < 0.2 < real["prdc_coverage"], name
    assert scores["constant"]["prdc_precision"] == 0.0
    assert scores["constant"]["diversity_ms_ssim_generated"] > 0.99  # total mode collapse
    assert scores["noise"]["nn_psnr_mean"] < real["nn_psnr_mean"]


def test_training_images_are_flagged_as_copies(scores):
    m = scores["train"]
    assert m["privacy_near_copy_share"] == 1.0 and m["privacy_nn_median_ratio"] == 0.0
    assert scores["val"]["privacy_near_copy_share"] < m["privacy_near_copy_share"]


def test_run_writes_metrics_report_figures_and_mlflow(project, extractor, pneumonia, tmp_path):
    import mlflow

    cfg = EvaluateConfig(**{**FAST, "n_generated": 200, "min_samples": 100, "utility": True,
                            "utility_epochs": 1, "utility_max_train": 100})
    out = tmp_path / "eval"
    res = run(cfg, project, HeldOutReal(pneumonia, "val"), pneumonia.root, out, extractor=extractor,
              model_uri="reference:val")
    m = json.loads((out / "metrics.json").read_text())
    assert all(k in m for k in GATE_KEYS)
    for k in ("real", "real_plus_synth", "synth_only", "real_dup"):
        assert 0.0 <= m[f"utility_acc_{k}"] <= 1.0 and 0.0 <= m[f"utility_auc_{k}"] <= 1.0
    assert m["utility_pseudo_labels"] == 0.0  # a conditional generator's own labels were used
    assert m["utility_n_train_real_dup"] == m["utility_n_train_real_plus_synth"] == 200
    assert m["utility_reference"] == {"dataset": "PneumoniaMNIST", "model": "ResNet-18 (28)", "acc": 0.854, "auc": 0.944}
    assert m["protocol"]["backbone"] == extractor.backbone and "bilinear" in m["protocol"]["resize_policy"]
    report = (out / "report.md").read_text()
    assert "FID-domain" in report and extractor.backbone in report and "SYNTHETIC" in report
    assert "0.854" in report and "UNSTABLE" not in report
    for fig in ("synthetic_samples.png", "nearest_neighbours.png", "closest_training_pairs.png", "metrics_table.png"):
        assert (out / fig).stat().st_size > 500
    run_ = mlflow.get_run(res.run_id)
    assert run_.data.metrics["fid_domain"] == pytest.approx(m["fid_domain"])
    assert run_.data.params["backbone"] == extractor.backbone
    assert run_.data.tags["medsynth.model_uri"] == "reference:val"
    assert "evaluation/metrics.json" in [a.path for a in mlflow.MlflowClient().list_artifacts(res.run_id, "evaluation")]


def test_too_few_samples_are_flagged_unstable(project, extractor, pneumonia, tmp_path):
    cfg = EvaluateConfig(**{**FAST, "n_generated": 40, "min_samples": 200})
    res = run(cfg, project, HeldOutReal(pneumonia, "val"), pneumonia.root, tmp_path / "e", extractor=extractor, track=False)
    assert res.metrics["unstable"] is True
    assert any("generated: 40 images" in r for r in res.metrics["unstable_reasons"])
    assert "UNSTABLE" in (tmp_path / "e" / "report.md").read_text()


class WrongShape(Noise):
    def generate(self, n, seed, labels=None, truncation=1.0):
        return np.zeros((n, 1, 28, 27), np.float32)


class NaNs(Noise):
    def generate(self, n, seed, labels=None, truncation=1.0):
        return np.full((n, 1, 28, 28), np.nan, np.float32)


class Big(Noise):
    resolution = 64


class OtherClasses(Noise):
    classes = ["AbdomenCT", "ChestCT"]


@pytest.mark.parametrize("gen, match", [(WrongShape(), "output has shape"), (NaNs(), "NaN"),
                                        (Big(), "makes 64 px images but the dataset is 28 px"),
                                        (OtherClasses(), "classes")])
def test_generator_that_does_not_fit_is_a_clear_error(project, extractor, pneumonia, tmp_path, gen, match):
    out = tmp_path / "e"
    with pytest.raises(InputError, match=match):
        run(EvaluateConfig(**FAST), project, gen, pneumonia.root, out, extractor=extractor, track=False)
    assert not out.exists()  # nothing half-written


def test_features_step_versions_and_logs_the_extractor(project, tmp_path):
    import mlflow

    from medsynth.components.ingest import IngestConfig
    from medsynth.config import load_stage, read_params

    datasets = load_stage(IngestConfig, "ingest", read_params(REPO / "params.yaml")).datasets
    cfg = features.FeaturesConfig(per_class_train=8, epochs=1, width=4, feature_dim=8)
    ext = features.run(cfg, project, datasets, tmp_path / "fx")
    assert len(ext.classes) == 7 and ext.class_index("pneumonia") == ext.classes.index("XR/PediatricPneumonia")
    assert ext.class_index("AbdomenCT") == ext.classes.index("CT/AbdomenCT")
    assert 0.0 <= ext.meta["test_accuracy"] <= 1.0 and ext.meta["n_test"] == 1774
    runs = mlflow.search_runs(search_all_experiments=True, filter_string="tags.`medsynth.step` = 'features'")
    assert runs["metrics.test_accuracy"].iloc[0] == pytest.approx(ext.meta["test_accuracy"])
    assert runs["tags.medsynth.extractor.sha256"].iloc[0] == ext.meta["sha256"]
    # a modified weights file is refused, not silently used
    with open(tmp_path / "fx" / "model.pt", "ab") as f:
        f.write(b"x")
    with pytest.raises(InputError, match="sha256 does not match"):
        features.load_extractor(tmp_path / "fx")


def test_cli_bad_inputs_are_one_line_errors(project_home, pneumonia, capsys):
    from medsynth.cli import main

    base = ["evaluate", "--params", str(REPO / "params.yaml"), "--no-track"]
    assert main(base + ["--reference", "val", "--data", str(project_home / "missing")]) == 2
    assert "not a preprocessed artifact" in capsys.readouterr().err
    assert main(base + ["--generator", str(project_home / "nope.pt"), "--data", str(pneumonia.root)]) == 2
    assert "generator file not found" in capsys.readouterr().err
    assert main(base + ["--reference", "val", "--data", str(pneumonia.root), "--set", "evaluate.n_generated=5"]) == 2
    assert "evaluate.n_generated: must be in 10..10000" in capsys.readouterr().err


def test_cli_unknown_model_uri_is_a_clear_error(project_home, pneumonia, capsys):
    from medsynth.cli import main

    rc = main(["evaluate", "--params", str(REPO / "params.yaml"), "--no-track",
               "--model-uri", "models:/no-such-model@champion", "--data", str(pneumonia.root)])
    assert rc == 2 and "models:/no-such-model@champion: cannot load the model" in capsys.readouterr().err
