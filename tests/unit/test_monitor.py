"""The monitor step and ``medsynth monitor`` on real chest X-rays: checks, bad input, decisions.

Reference: adult chest X-rays (data/mednist_cxr_small.npz) through the real ingest -> validate ->
preprocess steps, built once per module.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medsynth.cli import main
from medsynth.components import monitor, monitor_outputs, trigger
from medsynth.config import load_stage
from medsynth.errors import ConfigError, InputError
from medsynth.monitoring.shifts import Shift, apply_shift

DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    from medsynth.components.ingest import ingest_sources
    from medsynth.components.preprocess import PreprocessConfig, preprocess_dataset
    from medsynth.components.validate import ValidateConfig, validate_dataset
    from medsynth.config import build
    from medsynth.readers import SourceConfig

    root = tmp_path_factory.mktemp("reference")
    src = build(SourceConfig, {"path": "mednist_cxr_small.npz", "format": "npz", "modality": "XR",
                               "classes": ["CXR"]}, "src")
    ingest_sources([src], DATA, root / "ingest", limit_per_class=400)
    validate_dataset(ValidateConfig(), root / "ingest", root / "validate")
    preprocess_dataset(PreprocessConfig(), root / "validate", root / "preprocess")
    return root / "preprocess"


@pytest.fixture(scope="module")
def batches(tmp_path_factory) -> dict[str, Path]:
    """Unlabelled batches as they would arrive: npz files and a PNG folder."""
    from PIL import Image

    d = tmp_path_factory.mktemp("batches")
    cxr = np.load(DATA / "mednist_cxr_small.npz")
    ped = np.load(DATA / "pneumoniamnist.npz")["test_images"]
    ct = np.load(DATA / "mednist_ct_small.npz")["test_images"]
    out = {}
    for name, imgs in {"same": cxr["test_images"], "ped1": ped[:150], "ped2": ped[150:300],
                       "ct": ct[:100], "ct2": ct[100:200], "noisy": apply_shift(cxr["val_images"], Shift.NOISE, 0.04),
                       "blur": apply_shift(cxr["val_images"], Shift.BLUR, 1.0)}.items():
        np.savez(d / f"{name}.npz", test_images=imgs)
        out[name] = d / f"{name}.npz"
    png = d / "png_batch"
    png.mkdir()
    for i, im in enumerate(cxr["val_images"][:60]):
        Image.fromarray(im).save(png / f"img{i:03d}.png")
    (png / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png")
    out["png"] = png
    (d / "empty").mkdir()
    out["empty"] = d / "empty"
    return out


@pytest.fixture
def full_cfg(params):
    return load_stage(monitor.MonitorConfig, "monitor", params)


@pytest.fixture
def cfg(params):
    """Same tests without Evidently's HTML widgets (tested once below, and in test_drift.py)."""
    return load_stage(monitor.MonitorConfig, "monitor", params, {"monitor.html_report": "false"})


def test_same_source_batch_is_checked_reported_logged_and_recorded(project, params, full_cfg, reference, batches):
    import mlflow

    res = monitor.run(full_cfg, project, batches["same"], params, reference=reference)
    assert not res.drift.drifted, res.drift.summary_line()
    assert res.n_valid == 200 and res.n_quarantined == 0
    summary = json.loads((res.out_dir / "summary.json").read_text())
    assert summary["batch_hash"] == res.batch_hash and "sharpness" in summary["drift"]["p_values"]
    assert res.report_html.stat().st_size > 10_000
    run = mlflow.get_run(res.run_id)
    exp = mlflow.get_experiment(run.info.experiment_id)
    assert exp.name == "monitoring" and run.data.metrics["drifted"] == 0.0
    assert {a.path for a in mlflow.MlflowClient().list_artifacts(res.run_id)} >= {"summary.json", "report.html"}
    [ev] = monitor.history_of(project).events("check")
    assert ev["batch_hash"] == res.batch_hash and ev["drifted"] is False and ev["run_id"] == res.run_id


def test_corrupt_file_is_quarantined_and_the_rest_checked(project, params, cfg, reference, batches):
    res = monitor.run(cfg, project, batches["png"], params, reference=reference, track=False)
    assert res.n_valid == 60 and res.n_quarantined == 1
    q = [json.loads(x) for x in (res.out_dir / "quarantine.jsonl").read_text().splitlines()]
    assert "broken.png" in q[0]["reason"] and "cannot decode" in q[0]["reason"]
    assert not res.drift.drifted


def test_other_modality_and_size_are_reported_not_crashed(project, params, cfg, reference, batches):
    ct = monitor.run(cfg, project, batches["ct"], params, reference=reference, modality="CT", track=False)
    assert ct.drift.drifted and any("modality CT differs" in w for w in ct.warnings)
    ped = monitor.run(cfg, project, batches["ped1"], params, reference=reference, track=False)
    assert ped.drift.drifted and any("28x28" in w for w in ped.warnings)


def test_bad_input_gives_clear_errors_and_keeps_history(project, params, cfg, reference, batches, capsys):
    monitor.run(cfg, project, batches["same"], params, reference=reference, track=False)
    hist = monitor.history_of(project)
    before = hist.path.read_text()
    with pytest.raises(InputError, match="empty folder"):
        monitor.run(cfg, project, batches["empty"], params, reference=reference, track=False)
    with pytest.raises(InputError, match="monitoring reference not found"):
        monitor.run(cfg, project, batches["same"], params, reference=project.root / "nothing", track=False)
    assert hist.path.read_text().startswith(before)  # only appended to
    assert [e["stage"] for e in hist.events("error")] == ["check", "check"]
    rc = main(["monitor", "--batch", str(batches["same"]), "--reference", str(project.root / "nothing")])
    assert rc == 2 and "monitoring reference not found" in capsys.readouterr().err


def test_drift_on_two_batches_triggers_once_and_dry_run_does_not_act(project, params, reference, batches, capsys):
    common = ["--reference", str(reference), "--set", "monitor.policy.new_data_min_images=null",
              "--set", "monitor.html_report=false"]
    assert main(["monitor", "--batch", str(batches["noisy"]), "--dry-run", "--no-track", *common]) == 0
    out = capsys.readouterr().out
    assert "DRIFT" in out and "domain: unverified" in out
    assert "[dry run] no trigger: 1 consecutive drifted batch(es) of 2" in out
    # the same content again is the same batch: it cannot confirm itself
    assert main(["monitor", "--batch", str(batches["noisy"]), "--dry-run", "--no-track", *common]) == 0
    assert "no trigger" in capsys.readouterr().out
    assert main(["monitor", "--batch", str(batches["blur"]), "--dry-run", "--no-track", *common]) == 0
    out = capsys.readouterr().out  # confirmed drift, but nothing may be learnt from until a person approves
    assert "[dry run] AWAITING APPROVAL: drift confirmed: 2 consecutive" in out and "wait for approval" in out
    noisy = monitor.history_of(project).events("check")[0]["batch_hash"]
    assert main(["monitor", "approve", noisy[:12], "--reason", "same chest X-rays, noisier detector",
                 "--by", "dr-test"]) == 0
    assert main(["monitor", "decide", "--dry-run", *common]) == 0
    out = capsys.readouterr().out
    assert "[dry run] TRIGGER retraining: drift confirmed: 2 consecutive" in out and "would retrain" in out
    hist = monitor.history_of(project)
    assert hist.events("trigger") == [] and hist.events("decision")[-1]["dry_run"] is True
    assert hist.events("approval")[0]["by"] == "dr-test"
    # acting on it (here: recording the launch) consumes the approved batch only
    cfg = load_stage(monitor.MonitorConfig, "monitor", params, {"monitor.policy.new_data_min_images": "null",
                                                                "monitor.html_report": "false"})
    decision = trigger.decide(cfg, project, reference=reference)
    assert decision.trigger and decision.batches == [noisy] and len(decision.pending) == 1
    ref = monitor.load_reference(reference)
    new_params = trigger.retrain_params(params, decision, ref, {"ingest.dataset": "cxr"})
    added = new_params["ingest"]["datasets"]["cxr"][len(params["ingest"]["datasets"]["cxr"]):]
    assert [Path(s["path"]).name for s in added] == ["noisy.npz"]
    assert added[0]["classes"] == ["CXR"] and added[0]["modality"] == "XR"
    assert params["ingest"]["datasets"] != new_params["ingest"]["datasets"]  # original untouched
    with pytest.raises(ConfigError, match="the champion was trained on"):  # another dataset's classes
        trigger.retrain_params(params, decision, ref, {"ingest.dataset": "ct"})
    trigger.record_trigger(project, decision, {"runner": "test"})
    assert not trigger.decide(cfg, project, reference=reference).trigger
    assert main(["monitor", "history", "--plot", str(project.root / "h.png")]) == 0
    out = capsys.readouterr().out
    assert "TRIGGER (dry)" in out and "approval" in out and (project.root / "h.png").read_bytes()[:4] == b"\x89PNG"


def test_off_domain_batches_never_enter_a_retraining(project, params, reference, batches, capsys):
    """CT slices and pediatric X-rays arriving at an adult chest X-ray champion: drift, but off-domain."""
    common = ["--reference", str(reference), "--no-track", "--launch", "none", "--set", "monitor.html_report=false",
              "--set", "monitor.policy.auto_approve=true", "--set", "monitor.policy.new_data_min_images=150"]
    for name in ("ct", "ct2", "ped1", "ped2"):
        assert main(["monitor", "--batch", str(batches[name]), "--modality", "XR", *common]) == 0
        out = capsys.readouterr().out
        assert "DRIFT" in out and "domain: off" in out and "never used for retraining" in out
    assert "4 off-domain batch(es) excluded" in out and "TRIGGER" not in out
    off = [e["batch_hash"] for e in monitor.history_of(project).events("check")]
    with pytest.raises(InputError, match="off-domain data is never used for retraining"):
        trigger.approve(project, off[0], "someone", "looks fine to me")
    assert main(["monitor", "approve", off[1][:12], "--reason", "x"]) == 2
    assert "off-domain" in capsys.readouterr().err
    # an approved in-domain batch later: the retraining takes it, and none of the off-domain ones
    cfg = load_stage(monitor.MonitorConfig, "monitor", params, {"monitor.html_report": "false",
                                                                "monitor.policy.new_data_min_images": "150"})
    monitor.run(cfg, project, batches["noisy"], params, reference=reference, track=False)
    trigger.approve(project, str(batches["noisy"]), "dr-test", "same chest X-rays, noisier detector")
    decision = trigger.decide(cfg, project, reference=reference)
    assert decision.trigger and len(decision.batches) == 1 and sorted(decision.excluded) == sorted(off)
    new_params = trigger.retrain_params(params, decision, monitor.load_reference(reference), {"ingest.dataset": "cxr"})
    paths = [Path(s["path"]).name for s in new_params["ingest"]["datasets"]["cxr"]]
    assert "noisy.npz" in paths and not {"ct.npz", "ct2.npz", "ped1.npz", "ped2.npz"} & set(paths)


def test_feedback_ratings_trigger_for_the_champion(project, params, reference, capsys):
    for i in range(4):
        assert main(["monitor", "rate", "--model", "cxr", "--version", "2", "--rating",
                     "unrealistic" if i else "realistic"]) == 0
    capsys.readouterr()
    args = ["monitor", "decide", "--dry-run", "--model", "cxr", "--version", "2", "--reference", str(reference),
            "--set", "monitor.policy.feedback_min_ratings=4"]
    assert main(args) == 0
    assert "TRIGGER retraining: feedback: 3/4 ratings unrealistic (75%" in capsys.readouterr().out


class HeldOutImages:
    """An ImageGenerator stand-in that returns real held-out images (a reference point), optionally
    through an acquisition change (a silently broken model)."""

    resolution = 64
    classes: list[str] = []

    def __init__(self, shift: tuple[Shift, float] | None = None):
        z = np.load(DATA / "mednist_cxr_small.npz")
        self.pool = np.concatenate([z["val_images"], z["test_images"]])
        self.shift = shift

    def generate(self, n, seed, labels=None, truncation=1.0):
        idx = np.random.default_rng(seed).choice(len(self.pool), n, replace=False)
        imgs = self.pool[idx]
        if self.shift:
            imgs = apply_shift(imgs, *self.shift)
        return imgs[:, None].astype(np.float32) / 127.5 - 1.0


def test_champion_outputs_are_tracked_against_their_first_reference(project, cfg):
    import dataclasses

    cfg = dataclasses.replace(cfg, output_images=150)
    healthy = monitor_outputs.run_outputs(cfg, project, HeldOutImages(), "cxr@1", track=False)
    again = monitor_outputs.run_outputs(cfg, project, HeldOutImages(), "cxr@1", track=False)
    broken = monitor_outputs.run_outputs(cfg, project, HeldOutImages((Shift.BLUR, 1.0)), "cxr@1", track=False)
    assert not healthy.drift.drifted and not again.drift.drifted
    assert broken.drift.drifted and "sharpness" in broken.drift.drifted_columns
    seeds = [e["seed"] for e in monitor.history_of(project).events("output_check")]
    assert seeds == [1, 2, 3]  # a fresh batch each time


def test_the_retraining_loop_runs_with_any_launcher_and_records_a_failed_launch(project, params, reference):
    """components.retrain.act is the loop's one owner; the CLI, a scheduler or a test injects the launcher."""
    from medsynth.components.retrain import Launched, act
    from medsynth.monitoring.feedback import FeedbackStore, default_url

    cfg = load_stage(monitor.MonitorConfig, "monitor", params, {"monitor.policy.feedback_min_ratings": "4"})
    store = FeedbackStore(default_url(project.state_path()))
    for i in range(4):
        store.add("cxr", "2", "unrealistic" if i else "realistic")
    store.close()

    class Broken:
        def launch(self, params, overrides):
            raise RuntimeError("cluster unreachable")

    cxr = {"ingest.dataset": "cxr"}
    with pytest.raises(RuntimeError, match="cluster unreachable"):
        act(cfg, project, params, cxr, Broken(), model="cxr", version="2", reference=reference)
    hist = monitor.history_of(project)
    assert hist.events("error")[-1]["stage"] == "launch" and hist.events("trigger") == []

    seen = []

    class Recording:
        def launch(self, params, overrides):
            seen.append((params, overrides))
            return Launched("test", {"runner": "test", "n": len(seen)},
                            gate={"passed": False, "checks": [{"name": "c2st", "passed": False, "detail": "AUC 1.00"}]})

    acted = act(cfg, project, params, cxr, Recording(), model="cxr", version="2", reference=reference)
    assert acted.decision.trigger and len(seen) == 1 and seen[0][1] == cxr
    assert acted.launched.verdict() == "rejected by the gate: c2st: AUC 1.00"
    assert hist.events("trigger")[-1]["launched"] == {"runner": "test", "n": 1}
    # a dry run (or no launcher) decides without launching
    assert act(cfg, project, params, cxr, None, model="cxr", version="2", reference=reference).launched is None
    assert len(seen) == 1
