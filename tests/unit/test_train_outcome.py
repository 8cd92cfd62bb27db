"""What `medsynth train` / `medsynth demo` say about resuming."""

from __future__ import annotations

from pathlib import Path

from medsynth.components.train import TrainOutcome, resume_note


def _outcome(resumed: int | None, step: int = 372) -> TrainOutcome:
    return TrainOutcome(Path("artifacts/train"), Path("artifacts/train/generator.pt"), step, 4, resumed, {}, 1.0)


def test_resume_note_says_when_nothing_was_trained() -> None:
    assert resume_note(_outcome(None)) == ""
    assert resume_note(_outcome(100)) == " (resumed from step 100)"
    note = resume_note(_outcome(372))
    assert "already complete: nothing was trained" in note and "artifacts/train/checkpoints" in note
    assert "--no-resume" in note
