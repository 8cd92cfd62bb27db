"""The gate calibrated on both sides, on real bundled data (MedNIST breast MRI, 64 px), end to end.

Guards the two ways a quality gate goes wrong: a floor that refuses clinically harmless changes of
*real* images (so no generator can ever pass it; the full-resolution C2ST did this to a 0.7 px blur),
and a floor loosened until damaged images slip through. Each candidate is scored by
``medsynth evaluate``'s own ``score`` under params.yaml's policy, so the verdict is the gate's.
bench/judge_families.py runs the same families on every bundled dataset (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from test_evaluate import make_prepared  # noqa: E402 - tests/model is on sys.path

from medsynth import disturb as D
from medsynth.components import features
from medsynth.components.evaluate import EvaluateConfig, ImageSet, score
from medsynth.components.gate import NEAR_REAL, REFUSED, gate_policy
from medsynth.prepared import PreparedData
from medsynth.training.extractor import load_extractor

REPO = Path(__file__).resolve().parents[2]
# a subset that fits the suite's time (every change, on every dataset: bench/judge_families.py)
MUST_PASS = [("held-out real", None, 0), ("Gaussian blur 0.7 px", "gaussian_blur", 0.7),
             ("noise 5 grey levels", "noise", 5)]
MUST_REFUSE = [("box blur r 3", "blur", 3, {"c2st", "fid_floor_ratio"}),
               ("10 distinct images repeated", "mode_drop", 10, {"recall"}),
               ("heavy smudge 8 px", "smudge", 8, {"c2st"})]


@pytest.fixture(scope="module")
def mri(tmp_path_factory):
    from medsynth.components.ingest import IngestConfig
    from medsynth.config import load_stage, read_params

    root = make_prepared(tmp_path_factory.mktemp("prep") / "mri", REPO / "data" / "mednist_breastmri_small.npz",
                         ["BreastMRI"])
    params = read_params(REPO / "params.yaml")
    cfg = dataclasses.replace(load_stage(features.FeaturesConfig, "features", params), per_class_train=200, epochs=3)
    out = tmp_path_factory.mktemp("features") / "domain_cnn"
    features.train_extractor(cfg, load_stage(IngestConfig, "ingest", params).datasets, REPO / "data", out)
    return PreparedData.load(root), load_extractor(out)


def _judge(mri, images: np.ndarray) -> dict:
    data, ext = mri
    cfg = EvaluateConfig(min_samples=100, bootstrap=0, kid_subsets=10, diversity_pairs=200,
                         privacy_max_train_queries=500, c2st_max_images=400)
    s = ImageSet(D.quantise(images).astype(np.float32), None, "test:families", kind="images")
    return score(cfg, s, data, ext, seed=0, gate=gate_policy())[0]


@pytest.mark.slow
@pytest.mark.parametrize(("label", "name", "strength"), MUST_PASS)
def test_clinically_harmless_changes_pass_every_floor(mri, label, name, strength):
    val = mri[0].split("val")[0]
    m = _judge(mri, val if name is None else D.disturb(name, val, strength, seed=1))
    failed = {k: v["detail"] for k, v in m["gate_floors"].items() if not v["passed"]}
    assert m["gate_floors_passed"], f"{label} refused: {failed}"
    assert m["c2st_auc_16px"] < 0.65 and m["prdc_recall_16px"] > 0.8
    if name == "gaussian_blur":  # the full-resolution detector still tells it: reported, graded, not gated
        assert m["c2st_auc"] > 0.9 and m["gate_grade"] != NEAR_REAL and "full resolution" in m["gate_grade_reason"]


@pytest.mark.slow
@pytest.mark.parametrize(("label", "name", "strength", "by"), MUST_REFUSE)
def test_damaging_changes_are_refused(mri, label, name, strength, by):
    val = mri[0].split("val")[0]
    m = _judge(mri, D.disturb(name, val, strength, seed=1))
    failed = {k for k, v in m["gate_floors"].items() if not v["passed"]}
    assert not m["gate_floors_passed"] and m["gate_grade"] == REFUSED, f"{label} passed"
    assert by <= failed, f"{label}: refused by {failed}, expected at least {by}"
    assert m["gate_grade_reason"].startswith("refused: ")
