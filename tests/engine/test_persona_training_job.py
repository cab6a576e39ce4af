"""The train_persona job on the tiny engine: a run that dies mid-training (an exception from the
progress callback stands in for a killed worker) resumes from its checkpoint when the same job
runs again, without rendering its candidates again."""

from __future__ import annotations

import pytest

from engine.errors import NoTrainingCandidates
from engine.jobs.dispatch import run_job
from engine.jobs.failures import NO_TRAINING_CANDIDATES, classify, is_user_error
from engine.specs import JobKind, JobSpec, PersonaSpec, TrainParams, default_params


class WorkerDied(Exception):
    pass


def test_the_same_job_resumes_from_its_last_checkpoint(engine) -> None:
    spec = JobSpec(
        job_id="train-resume-1",
        kind=JobKind.TRAIN_PERSONA,
        persona=PersonaSpec(persona_id=3, archetype="sweet", lora_mix=[("sweet/sweet_face1", 1.0)], seed=5),
        seed=5,
        params=default_params("tiny"),
        train=TrainParams(images=2, steps=10, rank=4, checkpoint_every=3),
    )
    notes: list[str] = []

    def die_at_step_8(step: int, total: int, note: str | None = None) -> None:
        notes.append(note or "")
        if note and note.startswith("training step 8/"):
            raise WorkerDied

    with pytest.raises(WorkerDied):
        run_job(engine, spec, on_progress=die_at_step_8)
    assert engine.blobs.get_named("train/train-resume-1/checkpoint") is not None  # saved at step 6
    renders_before = engine.stats["renders"]

    seen: list[tuple[int, int, str | None]] = []
    result = run_job(engine, spec, on_progress=lambda s, t, note=None: seen.append((s, t, note)))
    assert engine.stats["renders"] == renders_before  # the filtered candidates were reused
    report = result.training
    assert report is not None and report["resumed_from_step"] == 6
    training = [n for _, _, n in seen if n and n.startswith("training")]
    assert training[0].startswith("training step 7/10") and training[-1].startswith("training step 10/10")
    assert seen[-1][0] == seen[-1][1]  # the bar ends full
    assert report["identity_checked"] is False and report["kept"] == len(result.image_keys) >= 1
    assert engine.blobs.exists(report["lora_key"])
    assert engine.blobs.get_named("train/train-resume-1/checkpoint") is None
    assert engine.blobs.get_named("train/train-resume-1/dataset") is None


def test_a_persona_whose_reference_shows_a_face_keeps_no_tiny_candidate(engine, dlib_embedder) -> None:
    """Why a conversation training test once failed in a full run: the tiny weights paint noise,
    and when dlib sees a "face" in a persona's portrait that face becomes its reference; no tiny
    candidate matches it, and the training stops before it trains. (The conversation tests pin
    persona seeds whose portraits show none: tests/conversation/conftest.py ``faceless_personas``.)
    That is the user's error: told in plain words, and the job leaves no dataset in storage."""
    from PIL import Image

    from tests.engine.conftest import INSIGHTFACE_IMAGES

    face = dlib_embedder.embed(Image.open(INSIGHTFACE_IMAGES / "Tom_Hanks_54745.png"))
    assert face is not None
    persona = PersonaSpec(persona_id=4, archetype="sweet", seed=6, embedding=[float(v) for v in face])
    spec = JobSpec(
        job_id="train-face-1",
        kind=JobKind.TRAIN_PERSONA,
        persona=persona,
        seed=6,
        params=default_params("tiny"),
        train=TrainParams(images=2, steps=4),
    )
    with pytest.raises(NoTrainingCandidates) as raised:
        run_job(engine, spec)
    refused = raised.value
    said = str(refused)  # the user's text: what happened, how many, why in plain words, what to do
    assert said.startswith("none of the 2 images rendered for the training matched the persona's face (")
    assert "nothing to train on" in said and "images=4" in said
    for internal in ("train/", "train-face-1", "{", "rejected", "threshold", "blob"):
        assert internal not in said, said
    assert refused.checked == 2 and sum(refused.rejected_by_reason.values()) == 2  # for the log
    assert len(refused.detail) == 2  # each candidate's verdict, for the log
    # the job leaves nothing in storage
    assert engine.blobs.get_named("train/train-face-1/dataset") is None
    assert engine.blobs.get_named("train/train-face-1/checkpoint") is None
    # the user's error, its own kind, the same text; no 🔁: a training again draws the same candidates
    failure = classify(refused)
    assert is_user_error(refused) and failure.kind == NO_TRAINING_CANDIDATES
    assert failure.message == said and not failure.retryable
    with pytest.raises(NoTrainingCandidates) as again:
        run_job(engine, spec.model_copy(update={"job_id": "train-face-2"}))
    assert again.value.detail == refused.detail
