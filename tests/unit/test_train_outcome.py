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


def test_a_checkpoint_from_before_a_new_model_field_still_resumes(tmp_path):
    """A ModelSpec field added later (e.g. minibatch_std_by_class) takes its default for older snapshots;
    a real difference is still refused."""
    import pytest

    from medsynth.errors import TrainingError
    from medsynth.training.checkpoint import check_compatible
    from medsynth.training.models import ModelSpec

    spec = ModelSpec(kind="cgan", arch="resize", ngf=32, ndf=32, num_classes=3, minibatch_std=True).to_dict()
    older = {k: v for k, v in spec.items() if k != "minibatch_std_by_class"}
    data = {"resolution": 64, "classes": ["a", "b", "c"]}
    check_compatible(tmp_path / "last.pt", {"model_spec": older, "data": data}, spec, data)  # no error
    with pytest.raises(TrainingError, match="checkpoint has minibatch_std_by_class=False but this run asks for "
                                            "minibatch_std_by_class=True"):
        check_compatible(tmp_path / "last.pt", {"model_spec": older, "data": data},
                         {**spec, "minibatch_std_by_class": True}, data)
