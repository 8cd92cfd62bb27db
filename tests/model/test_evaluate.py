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
from medsynth.training.extractor import load_extractor

REPO = Path(__file__).resolve().parents[2]
GATE_KEYS = ["fid_domain", "kid_domain_mean", "fid_domain_floor", "prdc_precision", "prdc_recall",
             "prdc_density", "prdc_coverage", "nn_ssim_mean", "nn_psnr_mean", "diversity_ms_ssim_generated",
             "diversity_ms_ssim_real", "cond_accuracy", "privacy_near_copy_share", "unstable"]
FAST = dict(n_generated=200, min_samples=150, utility=False, kid_subsets=10, diversity_pairs=100, privacy_max_train_queries=500,
            bootstrap=10)


def cheap_c2st():
    """A smaller C2ST budget for the tests (the detector still spots noise at AUC 1.0)."""
    from medsynth.c2st import C2STSettings

    return C2STSettings(resolution=32, epochs=3, coarse_epochs=3, max_images=400, bootstrap=50)


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
    return load_extractor(out)


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
    # the C2ST (a CNN per call) runs where a test reads it: held-out real and noise
    c2, with_c2st, no_c2st = cheap_c2st(), EvaluateConfig(**FAST), EvaluateConfig(**{**FAST, "c2st": False})
    # held-out real: 500 images, so the minority class (normal, 26 %) has 130; at 200 (52 normal) the per-class
    # coverage floor of 0.5 is a coin toss even for a real training sample (0.48 measured)
    held_out = EvaluateConfig(**{**FAST, "n_generated": 500})
    out = {name: compute(cfg, gen, pneumonia, extractor, conditional=True, c2st_settings=c2)[0] for name, gen, cfg in [
        ("val", HeldOutReal(pneumonia, "val"), held_out), ("train", HeldOutReal(pneumonia, "train"), no_c2st),
        ("noise", Noise(), with_c2st), ("constant", Noise(constant=True), no_c2st)]}
    uncond = EvaluateConfig(**{**FAST, "utility": True, "c2st": False})
    held = HeldOutReal(pneumonia, "val", conditional=False)
    out["unconditional"] = compute(uncond, held, pneumonia, extractor, conditional=False)[0]
    no_pseudo = EvaluateConfig(**{**FAST, "utility": True, "utility_pseudo_labels": False, "c2st": False})
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
    # coverage depends on the sample size (200 scored vs 624 real): compare with the floor at the same n
    assert m["prdc_precision"] > 0.7 and m["prdc_coverage"] > 0.8 * m["prdc_coverage_floor"]
    assert abs(m["diversity_ms_ssim_generated"] - m["diversity_ms_ssim_real"]) < 0.1
    assert m["cond_accuracy"] > 0.7 and m["cond_in_domain_share"] > 0.8
    # PneumoniaMNIST itself holds a few exact val/train duplicates (about 1.5 %): not more
    assert m["privacy_near_copy_share"] < 0.05 and 0.7 < m["privacy_nn_median_ratio"] < 1.3
    assert m["unstable"] is False and "fid_domain_class_normal" in m
    # the absolute floors of the gate: held-out real images clear every one of them
    assert m["gate_floors_passed"] is True, {k: v["detail"] for k, v in m["gate_floors"].items() if not v["passed"]}
    assert m["c2st_auc"] < 0.7 and m["c2st_auc_lo"] <= m["c2st_auc"] <= m["c2st_auc_hi"]
    assert m["fid_domain_lo"] <= m["fid_domain_hi"] and m["fid_domain_ratio_to_floor_lo"] <= m["fid_domain_ratio_to_floor_hi"]
    assert m["cond_majority_share"] == pytest.approx(0.74, abs=0.02)  # PneumoniaMNIST: 74 % pneumonia
    assert {"c2st_auc_class_normal", "fid_domain_floor_class_normal", "prdc_coverage_class_pneumonia",
            "diversity_ms_ssim_generated_class_normal"} <= set(m)
    assert m["protocol"]["c2st"]["epochs"] == 3 and m["protocol"]["gate_policy"]["max_c2st_auc"] is not None


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
    for name in ("noise", "constant"):  # refused by the floors, whatever the champion
        m = scores[name]
        assert m["gate_floors_passed"] is False, name
        assert not m["gate_floors"]["fid_floor_ratio"]["passed"] and not m["gate_floors"]["coverage"]["passed"], name
    assert scores["noise"]["c2st_auc"] > 0.95 and not scores["noise"]["gate_floors"]["c2st"]["passed"]
    assert not scores["noise"]["gate_floors"]["diversity"]["passed"]  # far more diverse than real
    assert not scores["constant"]["gate_floors"]["diversity"]["passed"]  # total collapse


def test_training_images_are_flagged_as_copies(scores):
    m = scores["train"]
    assert m["privacy_near_copy_share"] == 1.0 and m["privacy_nn_median_ratio"] == 0.0
    assert m["privacy_share_below_train_p5"] == 1.0
    assert not m["gate_floors"]["privacy"]["passed"] and not m["gate_floors"]["privacy_p5"]["passed"]
    assert scores["val"]["privacy_near_copy_share"] < m["privacy_near_copy_share"]


def test_run_writes_metrics_report_figures_and_mlflow(project, extractor, pneumonia, tmp_path):
    import mlflow

    cfg = EvaluateConfig(**{**FAST, "n_generated": 200, "min_samples": 100, "utility": True,
                            "utility_epochs": 1, "utility_max_train": 100, "c2st": False})
    out = tmp_path / "eval"
    res = run(cfg, project, HeldOutReal(pneumonia, "val"), pneumonia.root, out, extractor=extractor,
              model_uri="reference:val")
    m = json.loads((out / "metrics.json").read_text())
    assert all(k in m for k in GATE_KEYS)
    assert m["model_uri"] == "reference:val" and m["source"] == "reference"
    assert "c2st_auc" not in m and m["gate_floors"]["c2st"]["passed"] is False  # off = not measured, never a pass
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
    cfg = EvaluateConfig(**{**FAST, "n_generated": 40, "min_samples": 200, "c2st": False})
    res = run(cfg, project, HeldOutReal(pneumonia, "val"), pneumonia.root, tmp_path / "e", extractor=extractor, track=False)
    assert res.metrics["unstable"] is True
    assert any("generated: 40 images" in r and "raise evaluate.n_generated" in r for r in res.metrics["unstable_reasons"])
    assert "UNSTABLE" in (tmp_path / "e" / "report.md").read_text()


def test_small_test_split_gets_intervals_and_a_reason_not_a_gate_that_never_passes(extractor, pneumonia, tmp_path):
    """BreastMNIST-like: 155 real test images < min_samples = 200 (a property of the dataset)."""
    from dataclasses import replace

    from medsynth.components.gate import evaluate_gate, gate_policy

    arrays = dict(pneumonia.arrays)
    for k in ("test_x", "test_y", "test_ids"):
        arrays[k] = arrays[k][:155]
    small = PreparedData(tmp_path, dict(pneumonia.meta), arrays)
    cfg = EvaluateConfig(**{**FAST, "min_samples": 200, "c2st": False})
    m = compute(cfg, HeldOutReal(small, "val"), small, extractor, conditional=True)[0]
    assert m["unstable"] is False and m["small_reference"] is True  # n_generated = 200: nothing to fix
    assert any("real test split: 155 images" in r and "upper end" in r for r in m["small_reference_reasons"])
    assert m["fid_domain_ratio_to_floor_lo"] <= m["fid_domain_ratio_to_floor"] <= m["fid_domain_ratio_to_floor_hi"]
    ratio = m["gate_floors"]["fid_floor_ratio"]
    assert ratio["value"] >= m["fid_domain_ratio_to_floor_hi"] - 1e-6  # the pessimistic end (or a worse class)
    res = evaluate_gate(replace(gate_policy(), max_c2st_auc=None), m, None, conditional=True)
    assert "stable_metrics" not in {c.name for c in res.checks}  # the small split alone does not block the gate


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
    assert runs["tags.medsynth.training.extractor.sha256"].iloc[0] == ext.meta["sha256"]
    # a modified weights file is refused, not silently used
    with open(tmp_path / "fx" / "model.pt", "ab") as f:
        f.write(b"x")
    with pytest.raises(InputError, match="sha256 does not match"):
        load_extractor(tmp_path / "fx")


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
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "models:/no-such-model@champion: cannot" in err


def _cli_fast(extractor) -> list[str]:
    """CLI overrides: the module's tiny extractor and a small budget (the protocol is the same)."""
    sets = {"extractor": str(extractor.root), "min_samples": "100", "utility": "false", "kid_subsets": "10",
            "diversity_pairs": "100", "privacy_max_train_queries": "300", "bootstrap": "10", "c2st_max_images": "120"}
    return [a for k, v in sets.items() for a in ("--set", f"evaluate.{k}={v}")]


def _val_uint8(pneumonia: PreparedData, n: int = 120) -> tuple[np.ndarray, np.ndarray]:
    x, y = pneumonia.split_uint8("val")
    return x[:n, 0], y[:n]


@pytest.mark.parametrize("layout", ["npz", "png"])
def test_cli_scores_an_image_set_npz_or_png_folder(project_home, extractor, pneumonia, tmp_path, capsys, layout):
    """`medsynth evaluate --images`: real held-out images brought as files pass the same protocol as a model."""
    from PIL import Image

    from medsynth.cli import main

    x, y = _val_uint8(pneumonia)
    if layout == "npz":
        src = tmp_path / "set.npz"
        np.savez(src, images=x, labels=np.array(["normal", "pneumonia"])[y])  # labels as class names
    else:
        src = tmp_path / "pngs"
        for i, (img, c) in enumerate(zip(x, y, strict=True)):
            (src / pneumonia.classes[c]).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(src / pneumonia.classes[c] / f"{i:04d}.png")
    out = tmp_path / "eval"
    rc = main(["evaluate", "--params", str(REPO / "params.yaml"), "--no-track", "--images", str(src),
               "--data", str(pneumonia.root), "--out", str(out), *_cli_fast(extractor)])
    printed = capsys.readouterr().out
    assert rc == 0 and "gate floors:" in printed
    m = json.loads((out / "metrics.json").read_text())
    assert m["source"] == "images" and m["model_uri"] == f"images:{src.resolve()}"
    assert m["n_generated"] == 120 and m["conditional"] is True and "cond_accuracy_normal" in m
    assert len(m["protocol"]["source_sha256"]) == 64 and "c2st_auc" in m and "c2st_auc_class_pneumonia" in m
    assert isinstance(m["gate_floors_passed"], bool) and "fid_floor_ratio" in m["gate_floors"]
    assert m["fid_domain"] < 3 * m["fid_domain_floor"] + 1.0  # real images score near the real floor
    report = (out / "report.md").read_text()
    assert "## Verdict" in report and "absolute floors" in report


def _bad_inputs(tmp: Path, pneumonia: PreparedData) -> dict[str, tuple[Path, str]]:
    """Each bad input -> (path, what the one-line error must say)."""
    from PIL import Image

    x, y = _val_uint8(pneumonia, 20)
    cases: dict[str, tuple[Path, str]] = {}

    def npz(name: str, **arrays) -> Path:
        p = tmp / f"{name}.npz"
        np.savez(p, **arrays)
        return p

    cases["rgb"] = (npz("rgb", images=np.repeat(x[..., None], 3, -1)), "expected [N, H, W]")
    cases["float"] = (npz("float", images=x.astype(np.float32)), "expected uint8")
    cases["empty"] = (npz("empty", images=np.zeros((0, 28, 28), np.uint8)), "no images")
    cases["no_images_key"] = (npz("nokey", pictures=x), "no 'images' array")
    cases["resolution"] = (npz("res", images=np.zeros((20, 32, 32), np.uint8)), "images are 32x32 px but the prepared data is 28x28")
    cases["label_name"] = (npz("lname", images=x, labels=np.array(["cat"] * 20)), "label 'cat' names no class")
    cases["label_index"] = (npz("lidx", images=x, labels=np.full(20, 7)), "label 7 is not a class index 0..1")
    cases["label_count"] = (npz("lcount", images=x, labels=y[:5]), "one label per image")
    (tmp / "mixed").mkdir()
    Image.fromarray(x[0]).save(tmp / "mixed" / "a.png")
    (tmp / "mixed" / "notes.txt").write_text("not an image")
    cases["non_image"] = (tmp / "mixed", "notes.txt: not a PNG image")
    (tmp / "broken").mkdir()
    (tmp / "broken" / "b.png").write_bytes(b"\x89PNG garbage")
    cases["broken_png"] = (tmp / "broken", "b.png: not a readable PNG")
    (tmp / "empty_dir").mkdir()
    cases["empty_dir"] = (tmp / "empty_dir", "no PNG images")
    (tmp / "badclass" / "cats").mkdir(parents=True)
    Image.fromarray(x[0]).save(tmp / "badclass" / "cats" / "a.png")
    cases["class_folder"] = (tmp / "badclass", "cats: folder name names no class")
    cases["missing"] = (tmp / "nope.npz", "not found")
    (tmp / "set.csv").write_text("1,2\n")
    cases["format"] = (tmp / "set.csv", "unknown format '.csv'")
    return cases


def test_cli_bad_image_sets_are_one_line_errors_naming_the_file(project_home, pneumonia, tmp_path, capsys):
    from medsynth.cli import main

    for name, (path, why) in _bad_inputs(tmp_path, pneumonia).items():
        out = tmp_path / f"out-{name}"
        rc = main(["evaluate", "--params", str(REPO / "params.yaml"), "--no-track", "--images", str(path),
                   "--data", str(pneumonia.root), "--out", str(out)])
        err = capsys.readouterr().err.strip()
        assert rc == 2, (name, err)
        assert len(err.splitlines()) == 1 and err.startswith("medsynth: error: "), (name, err)
        assert path.name in err and why in err, (name, err)
        assert not out.exists(), name  # nothing written, no extractor trained
