"""The augmentation question (medsynth/study/augment_study.py): each arm's training set, a small run with the
shipped pneumonia generator on real PneumoniaMNIST images, the rendered block and its errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from medsynth.errors import ConfigError
from medsynth.imaging import to_res, to_uint8, to_unit
from medsynth.prepared import PreparedData
from medsynth.study import augment_study


@pytest.fixture
def pneumonia64(data_dir: Path) -> PreparedData:
    """A small class-imbalanced PneumoniaMNIST subset at 64 px (the shipped generator's resolution)."""
    z = np.load(data_dir / "pneumoniamnist.npz")
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 160), ("test", 120)):
        idx = np.sort(rng.choice(len(z[f"{split}_labels"]), n, replace=False))
        x = to_res(to_unit(z[f"{split}_images"][idx][:, None]), 64)
        arrays[f"{split}_x"], arrays[f"{split}_y"] = to_uint8(x), z[f"{split}_labels"][idx].reshape(-1)
    return PreparedData(root=Path("."), meta={"resolution": 64, "classes": ["normal", "pneumonia"],
                                              "data_hash": "test"}, arrays=arrays)


def _fake_synth(calls: list) -> Callable[[np.ndarray], np.ndarray]:
    def synth(labels: np.ndarray) -> np.ndarray:
        calls.append(len(labels))
        return np.full((len(labels), 1, 4, 4), 0.5, np.float32)  # recognisable: no real image is constant 0.5
    return synth


def test_every_arm_builds_the_set_it_names() -> None:
    x = np.linspace(-1, 1, 10 * 16, dtype=np.float32).reshape(10, 1, 4, 4)
    y = np.array([0, 0, 1, 1, 1, 1, 1, 1, 1, 1])  # 2 vs 8
    is_synth = lambda a: (a == 0.5).all(axis=(1, 2, 3))  # noqa: E731
    arms = augment_study.AugmentSettings(shares=(0.5, 1.0)).arms()
    assert arms == {"real": None, "synth_0.5": "dup_0.5", "dup_0.5": None, "synth_1": "dup_1", "dup_1": None,
                    "balance_synth": "balance_dup", "balance_dup": None,
                    "pretrain_synth": "pretrain_real", "pretrain_real": None}
    for arm, control in arms.items():
        calls: list[int] = []
        fits = augment_study.training_sets(arm, x, y, _fake_synth(calls), np.random.default_rng(0))
        last_x, last_y = fits[-1]
        assert len(last_x) == len(last_y)
        # the real split is always in the (last) fit, unchanged and in order
        np.testing.assert_array_equal(last_x[:10], x)
        np.testing.assert_array_equal(last_y[:10], y)
        n_synth = int(is_synth(np.concatenate([f[0] for f in fits])).sum())
        if arm.startswith("synth_"):
            share = float(arm.split("_")[1])
            assert len(last_y) == 10 + round(10 * share) and n_synth == round(10 * share)
            assert set(last_y[10:]) <= {0, 1}
        elif arm.startswith("balance_"):
            assert np.bincount(last_y).tolist() == [8, 8]
            assert n_synth == (6 if arm == "balance_synth" else 0)
            assert (last_y[10:] == 0).all()  # only the minority class is topped up
        elif arm == "pretrain_synth":
            assert len(fits) == 2 and is_synth(fits[0][0]).all() and len(fits[0][1]) == 10 and n_synth == 10
        elif arm == "pretrain_real":
            assert len(fits) == 2 and n_synth == 0
        else:
            assert n_synth == 0, arm
        assert bool(calls) == (n_synth > 0), arm  # the controls never ask for synthetic images
        if control:  # an arm and its control fit on the same number of images
            ctrl = augment_study.training_sets(control, x, y, _fake_synth([]), np.random.default_rng(0))
            assert [len(f[1]) for f in ctrl] == [len(f[1]) for f in fits], arm
    with pytest.raises(ConfigError, match="unknown arm"):
        augment_study.training_sets("mixup", x, y, _fake_synth([]), np.random.default_rng(0))


def test_small_run_with_the_shipped_generator(pneumonia64: PreparedData) -> None:
    from medsynth.training.loading import load_generator

    gen = load_generator("zoo:pneumonia")
    settings = augment_study.AugmentSettings(seeds=(0, 1), shares=(1.0,), epochs=1, width=8, feature_dim=16)
    lines: list[str] = []
    res = augment_study.run(gen, pneumonia64, settings, "zoo:pneumonia", "pneumonia", log=lines.append)
    assert set(res.scores) == set(settings.arms()) and all(set(v) == {0, 1} for v in res.scores.values())
    for per_seed in res.scores.values():
        for acc, auc in per_seed.values():
            assert 0.0 <= acc <= 1.0 and 0.0 <= auc <= 1.0
    assert res.n_images["synth_1"] == res.n_images["dup_1"] == "320"
    assert res.n_images["pretrain_synth"] == "160 + 160"
    assert len(lines) == 2 * len(settings.arms()) and "balance_synth" in lines[3]
    # deterministic for the seeds
    again = augment_study.run(gen, pneumonia64, augment_study.AugmentSettings(seeds=(0,), shares=(1.0,), epochs=1, width=8,
                                                                  feature_dim=16), "zoo:pneumonia", log=lambda _: None)
    assert again.scores["synth_1"][0] == res.scores["synth_1"][0]
    block = augment_study.render(res, "medsynth study --augment", "test machine")
    assert block.startswith(augment_study.START) and block.endswith(augment_study.END)
    assert "| synth_1 | 320 |" in block and "vs dup_1" in block and "nan" not in block
    m, lo, hi = res.paired("synth_1", "dup_1", 1)
    assert lo <= m <= hi and f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]" in block


def test_the_generator_is_named_by_its_sha256(tmp_path: Path) -> None:
    from medsynth.fileio import sha256_file
    from medsynth.training import zoo_manifest

    entry = zoo_manifest.entries()["pneumonia"]
    assert augment_study.generator_sha256("zoo:pneumonia") == entry.sha256 == sha256_file(entry.path)
    assert augment_study.generator_sha256(str(entry.path.parent)) == entry.sha256  # a folder holding generator.pt
    assert augment_study.generator_sha256("zoo:nope") == augment_study.generator_sha256("runs:/abc/model") == ""


def test_bad_generators_are_refused(pneumonia64: PreparedData) -> None:
    from medsynth.training.loading import load_generator

    with pytest.raises(ConfigError, match="differ from the data's"):
        augment_study.run(load_generator("zoo:ct"), pneumonia64, augment_study.AugmentSettings(seeds=(0,), epochs=1))
    with pytest.raises(ConfigError, match="distinct"):
        augment_study.AugmentSettings(seeds=(1, 1)).check()
    with pytest.raises(ConfigError, match="shares"):
        augment_study.AugmentSettings(shares=(0.0,)).check()


def test_the_block_replaces_itself_and_keeps_the_rest(tmp_path: Path) -> None:
    from medsynth.fileio import put_block

    doc = tmp_path / "RESULTS.md"
    doc.write_text("# Results\n\n## Quality\n\ntable\n")
    put_block(doc, f"{augment_study.START}\nfirst\n{augment_study.END}", augment_study.START, augment_study.END, augment_study.SECTION)
    put_block(doc, f"{augment_study.START}\nsecond\n{augment_study.END}", augment_study.START, augment_study.END, augment_study.SECTION)
    text = doc.read_text()
    assert text.count(augment_study.SECTION) == 1 and "second" in text and "first" not in text
    assert text.startswith("# Results\n\n## Quality\n\ntable")


def test_holm_adjustment_and_the_result_round_trip() -> None:
    # Holm: sorted p x (m - rank), made monotone, capped at 1
    assert augment_study._holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert augment_study._holm([float("nan"), 0.01]) == pytest.approx([1.0, 0.02])
    settings = augment_study.AugmentSettings(seeds=(0, 1, 2), shares=(1.0,))
    scores = {arm: {s: (0.80 + 0.01 * s, 0.90) for s in settings.seeds} for arm in settings.arms()}
    scores["synth_1"] = {s: (0.85 + 0.01 * s + 0.001 * (s == 1), 0.90) for s in settings.seeds}  # +0.05 every seed
    res = augment_study.AugmentResult("zoo:pneumonia", "pneumonia", ["normal", "pneumonia"], 10, 5, [3, 7], settings,
                                scores, {a: "10" for a in scores}, 60.0, "ab" * 32)
    back = augment_study.AugmentResult.from_dict(res.to_dict())
    assert back == res
    assert res.p_value("synth_1", "dup_1", 0) < 1e-3 and res.p_value("synth_1", "dup_1", 1) == 1.0
    text = augment_study.render(res, "cmd", "machine")
    assert "synth_1 vs dup_1, ACC: +0.050" in text and "also after Holm's correction" in text
    assert "(sha256 abababababab)" in text
