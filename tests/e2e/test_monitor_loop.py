"""The continuous-improvement loop end to end, on real chest X-rays (smoke-sized training).

champion trained (the whole pipeline) -> new real batches with an acquisition change arrive ->
the monitor flags them -> the policy triggers -> the same pipeline retrains on old + new data ->
the challenger is evaluated and gated (promoted or rejected, with reasons) -> the monitor re-checks
against the new model's training data and says whether the drift is resolved (or why not).
"""

from __future__ import annotations

import pytest

from medsynth.cli import main

# smoke-sized training, spelled out: the train profile's presets do not reach the pipeline's train task
SETTINGS = ["ingest.dataset=cxr", "train.profile=custom", "train.epochs=1", "train.max_steps=25", "train.ngf=16",
            "train.ndf=16", "train.batch_size=32", "train.max_train_images=800", "features.per_class_train=50",
            "features.epochs=1", "evaluate.n_generated=300", "monitor.html_report=false"]
SMALL = [x for kv in SETTINGS for x in ("--set", kv)]


@pytest.mark.slow
def test_drifted_batches_trigger_a_retraining_that_goes_through_the_gate(project_home, repo, capsys, monkeypatch):
    from medsynth.components.monitor import history_of
    from medsynth.config import read_params
    from medsynth.project import load_project

    monkeypatch.chdir(repo)
    assert main(["monitor", "loop", "--shift", "blur=1.0", *SMALL]) == 0
    out = capsys.readouterr().out
    assert "1. training the champion" in out
    assert out.count("DRIFT:") >= 2  # both new batches flagged
    assert "4. TRIGGER retraining: drift confirmed: 2 consecutive" in out
    assert "5. retrained on the current data + 2 new batches" in out
    assert ("promoted to champion" in out) or ("not promoted" in out) or ("rejected by the gate" in out)
    assert "6. re-check of batch3" in out and ("drift resolved" in out or "still drifted" in out)
    history = history_of(load_project(read_params(repo / "params.yaml")))
    [trigger] = history.events("trigger")
    assert len(trigger["batches"]) == 2 and trigger["launched"]["runner"] == "kfp.local"
    # the same batches never trigger again
    assert main(["monitor", "decide", "--dry-run", *SMALL]) == 0
    assert "no trigger" in capsys.readouterr().out
