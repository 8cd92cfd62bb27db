"""The quality judge on real bundled data: the feature space sees disturbances, noise is out of domain.

Keeps docs/BENCHMARKS.md's "Quality judge" table true at small size: a briefly trained extractor
(64 px, width 8), FID-domain of disturbed held-out real images rises with each disturbance's strength.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medsynth import disturb as D
from medsynth import metrics as M
from medsynth.components import features
from medsynth.training.extractor import FORMAT, load_extractor

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def extractor(tmp_path_factory):
    from medsynth.components.ingest import IngestConfig
    from medsynth.config import load_stage, read_params

    cfg = features.FeaturesConfig(resolution=64, per_class_train=100, epochs=3, batch_size=32, width=8,
                                  feature_dim=32)
    out = tmp_path_factory.mktemp("judge") / "fx"
    datasets = load_stage(IngestConfig, "ingest", read_params(REPO / "params.yaml")).datasets
    features.train_extractor(cfg, datasets, REPO / "data", out)
    return load_extractor(out)


@pytest.fixture(scope="module")
def cxr():
    with np.load(REPO / "data" / "mednist_cxr_small.npz") as z:
        to = lambda a: a[:, None].astype(np.float32) / 127.5 - 1  # noqa: E731
        return to(z["train_images"][:200]), to(z["val_images"]), to(z["test_images"])


def test_extractor_is_versioned_and_judges_in_domain(extractor):
    assert extractor.meta["format"] == FORMAT and extractor.backbone.startswith("JudgeNet")
    assert extractor.has_in_domain and extractor.model.feature_dim == extractor.meta["feature_dim"]
    share = extractor.meta["in_domain"]["share_in_domain"]
    assert share["real_test"] > 0.9 and share["uniform_noise"] < 0.05 and share["checkerboard_30"] < 0.2


@pytest.mark.parametrize(("name", "strengths"), [
    ("noise", (6, 13, 25)), ("blur", (1, 2, 3)), ("checkerboard", (5, 15, 30)),
    ("salt_pepper", (0.005, 0.02, 0.08)), ("smudge", (2, 4, 8)), ("swirl", (0.5, 1, 2)),
])
def test_fid_domain_rises_with_disturbance_strength(extractor, cxr, name, strengths):
    x_tr, x_va, x_te = cxr
    mod = extractor.feature_module()
    f_te = M.extract(mod, x_te)
    floor = M.fid_kid(f_te, M.extract(mod, x_tr), kid_subsets=2)["fid"]
    clean = M.fid_kid(f_te, M.extract(mod, x_va), kid_subsets=2)["fid"]
    fids = [M.fid_kid(f_te, M.extract(mod, D.disturb(name, x_va, s, seed=1)), kid_subsets=2)["fid"]
            for s in strengths]
    assert clean < 2 * floor
    assert clean < fids[0] < fids[1] < fids[2], (clean, fids)
    assert fids[2] > 3 * floor


def test_noise_gets_no_confident_class(extractor, cxr):
    _, x_va, _ = cxr
    probs, ok = extractor.judge(x_va)
    assert probs.shape == (len(x_va), len(extractor.classes)) and ok.mean() > 0.85
    noise = np.random.default_rng(0).uniform(-1, 1, (64, 1, 32, 32)).astype(np.float32)  # resized to 64 px
    probs, ok = extractor.judge(noise)  # any class: it must still be out of domain
    assert ok.mean() < 0.05  # noise is out of domain, whatever class it looks most like
    scores = extractor.in_domain_score(D.noise(x_va, 25, seed=0))
    assert np.median(scores) > 1.0


def test_ensure_retrains_an_extractor_made_under_other_settings(tmp_path, capsys):
    from medsynth.components.ingest import IngestConfig
    from medsynth.config import load_stage, read_params
    from medsynth.project import ProjectConfig

    params = read_params(REPO / "params.yaml")
    datasets = load_stage(IngestConfig, "ingest", params).datasets
    project = ProjectConfig(data_dir=str(REPO / "data"), artifacts_dir=str(tmp_path / "a"), state_dir=str(tmp_path / "s"),
                            experiment="t", seed=0)
    small = dict(resolution=32, per_class_train=12, batch_size=16, width=4, feature_dim=8)
    old = features.FeaturesConfig(**small, epochs=1)
    new = features.FeaturesConfig(**small, epochs=2)
    out = tmp_path / "fx"
    first = features.ensure(old, project, datasets, out, track=False)
    assert first.meta["config"]["epochs"] == 1
    # a user-named extractor is used as it is
    kept = features.ensure(new, project, datasets, out, track=False, retrain_stale=False)
    assert kept.meta["sha256"] == first.meta["sha256"]
    again = features.ensure(new, project, datasets, out, track=False)
    assert "trained under other features settings (epochs); training it again" in capsys.readouterr().out
    assert again.meta["config"]["epochs"] == 2 and again.meta["sha256"] != first.meta["sha256"]
    assert features.ensure(new, project, datasets, out, track=False).meta["sha256"] == again.meta["sha256"]


def test_exposure_is_projected_out_and_defects_are_not(extractor, cxr):
    """The +-5 % gain directions leave the embedding; noise, blur and periodic artefacts still move it."""
    import torch

    net = extractor.model
    info = extractor.meta["exposure"]
    p = net.feat_project.double()
    rank = info["directions_removed"]
    assert 0 < rank <= 64 and info["movement_left"] <= 0.05
    assert torch.allclose(p, p.T, atol=1e-5) and torch.allclose(p @ p, p, atol=1e-4)
    assert abs(float(torch.trace(p)) - (net.feature_dim - rank)) < 1e-2
    _, x_va, _ = cxr
    x = extractor._resize(x_va)

    def moved(changed: np.ndarray) -> tuple[float, float]:  # mean squared movement (projected, not projected)
        y = extractor._resize(changed)
        with torch.no_grad():
            d = (net.raw_features(y) - net.raw_features(x)).double() * net.feat_scale.double()
        return float(((d @ p) ** 2).sum(1).mean()), float((d**2).sum(1).mean())

    gain_kept, gain_all = moved(D.brightness(x_va, 5, seed=1))
    assert gain_kept < 0.15 * gain_all, (gain_kept, gain_all)
    for name, strength in (("noise", 25), ("checkerboard", 30), ("blur", 3)):
        kept, total = moved(D.disturb(name, x_va, strength, seed=1))
        # the exposure directions carry part of a defect's movement too (noise and blur change the band
        # energies as a gain does), but what is left dwarfs what is left of the harmless gain
        assert kept > 0.1 * total, (name, kept, total)
        assert kept > 50 * gain_kept, (name, kept, gain_kept)


def test_extractor_saved_before_the_projection_still_loads(extractor, tmp_path):
    import shutil

    import torch

    from medsynth.fileio import sha256_file, write_json

    out = tmp_path / "old"
    shutil.copytree(extractor.root, out)
    payload = torch.load(out / "model.pt", weights_only=True)
    del payload["state_dict"]["feat_project"]
    torch.save(payload, out / "model.pt")
    meta = dict(extractor.meta, sha256=sha256_file(out / "model.pt"))
    write_json(out / "meta.json", meta)
    old = load_extractor(out)
    assert torch.equal(old.model.feat_project, torch.eye(old.model.feature_dim))
