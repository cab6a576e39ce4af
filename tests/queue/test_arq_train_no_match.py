"""A training none of whose candidate renders matches the persona's face, over arq (a worker in this
process on the shared tiny engine): the chat user is told what happened and what to do (not
"something went wrong"), the job runs once (the queue retries a program error, not the user's:
the saved dataset would fail the same way), and it leaves no dataset in storage."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from PIL import Image

from bot.app import App
from commands.events import Reply
from engine.jobs.failures import NO_TRAINING_CANDIDATES
from engine.render.identity import DlibEmbedder
from storage.models import JobStatus
from tests.conversation.helpers import queued, run
from tests.engine.conftest import INSIGHTFACE_IMAGES
from tests.queue.conftest import console_for


async def test_a_training_with_no_matching_candidate_tells_the_user_once(
    arq_app: App, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = arq_app
    console = console_for(app, tmp_path)
    await run(console, "/persona create sweet Mia")
    owner = await app.store.user("console", "ann")
    mia = await app.store.find_persona(owner.id, "Mia")
    assert mia is not None and mia.status == "ready"
    # a real face as Mia's reference: the tiny engine's noise renders never match it
    face = DlibEmbedder().embed(Image.open(INSIGHTFACE_IMAGES / "Tom_Hanks_54745.png"))
    assert face is not None
    await app.store.persona_ready(mia.id, mia.reference_key, [float(v) for v in face])

    caplog.set_level(logging.INFO)
    (job_id,) = queued(await run(console, "/persona train Mia images=2 steps=4"))

    job = await app.store.get_job(job_id)
    assert job.status == JobStatus.FAILED and job.attempts == 1  # not retried by the queue
    assert job.result["failure"]["kind"] == NO_TRAINING_CANDIDATES and not job.result["failure"]["retryable"]
    said = [a.text for a in console.actions if isinstance(a, Reply) and "did not work" in a.text]
    assert len(said) == 1, said
    assert "none of the 2 images rendered for the training matched the persona's face" in said[0]
    assert "images=4" in said[0] and "error id" in said[0]
    assert "something went wrong" not in said[0] and "🔁" not in said[0] and "train/" not in said[0]
    assert not [r.getMessage() for r in caplog.records if job_id in r.getMessage() and r.levelno >= logging.WARNING]
    assert app.blobs.get_named(f"train/{job_id}/dataset") is None
    mia = await app.store.get_persona(mia.id)
    assert mia.status == "ready" and mia.versions == [] and mia.active_version == 0
