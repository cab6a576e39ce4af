"""Issue 20 items 8 and 12: a failed job tells its user a short message for its kind of failure
with an error id, never the exception's internals (an S3 endpoint, bucket or key); the details
stay in the job's ``result["failure"]`` (admin view) and the log. A photo without a face is the
user's error: one INFO line without a traceback, no retry, and no 🔁 offer; so is a training whose
candidate renders all fail the identity filter (nothing to train on)."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from engine.errors import NoTrainingCandidates, PhotoHasNoFace
from engine.jobs.failures import NO_FACE, NO_TRAINING_CANDIDATES, STORAGE
from engine.jobs.noop_engine import NoopEngine
from engine.jobs.progress import LocalBus
from engine.jobs.runner import JobRunner
from engine.specs import JobKind, JobSpec, PersonaSpec
from storage.models import JobStatus
from storage.repository import Store
from tests.services import free_port

DEAD_ENDPOINT = f"http://127.0.0.1:{free_port()}"
KEY = "blobs/826e5f0c9a1b2d3e4f5a6b7c8d9e0f1a.png"


class StoringEngine(NoopEngine):
    """Renders nothing and stores its "result" on an S3 endpoint that is down, as the engine's
    blob store would: boto3 raises its real EndpointConnectionError."""

    def run(self, spec: JobSpec, on_progress: Any = None, cancel: threading.Event | None = None) -> Any:
        import boto3
        from botocore.config import Config

        client = boto3.client(
            "s3",
            endpoint_url=DEAD_ENDPOINT,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
            config=Config(retries={"max_attempts": 1}, connect_timeout=1),
        )
        client.put_object(Bucket="studio-prod-blobs", Key=KEY, Body=b"png")
        raise AssertionError("the endpoint is down: put_object cannot succeed")


class NoFaceEngine(NoopEngine):
    def run(self, spec: JobSpec, on_progress: Any = None, cancel: threading.Event | None = None) -> Any:
        raise PhotoHasNoFace("no face found in the photo: send a clear photo of one person facing the camera")


class NoCandidateEngine(NoopEngine):
    def run(self, spec: JobSpec, on_progress: Any = None, cancel: threading.Event | None = None) -> Any:
        raise NoTrainingCandidates(
            "none of the 3 images rendered for the training matched the persona's face (1 showed no face,"
            " 2 showed a different face), so there was nothing to train on; the same settings render the"
            " same images again, so train it with more images (images=6) to add new ones",
            checked=3,
            rejected_by_reason={"no face": 1, "score": 2},
        )


async def _spec(store: Store, kind: JobKind) -> JobSpec:
    owner = await store.user("console", "ann")
    persona = await store.create_persona(owner.id, f"P{kind}", "sweet", [], seed=1)
    spec = JobSpec(job_id=f"job-{kind}", kind=kind, persona=PersonaSpec(persona_id=persona.id, archetype="sweet"))
    await store.create_job(
        spec.job_id, kind, spec.model_dump(mode="json"), user_id=owner.id, thread_id=None, platform="console"
    )
    return spec


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_storage_failure_shows_no_internals_to_the_user(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    spec = await _spec(store, JobKind.CREATE_PERSONA)
    bus = LocalBus()
    await JobRunner(StoringEngine(), store, bus).execute(spec.model_dump(mode="json"), final_attempt=True)
    job = await store.get_job(spec.job_id)
    failure = job.result["failure"]
    assert job.status == JobStatus.FAILED and failure["kind"] == STORAGE and failure["retryable"]
    for secret in ("127.0.0.1", "http", "studio-prod-blobs", "826e5f0c", "EndpointConnectionError"):
        assert secret not in job.error, job.error
    assert job.error.endswith(f"(error id {failure['error_id']})") and "storage" in job.error
    assert "EndpointConnectionError" in failure["detail"]  # for the admin view
    logged = [r for r in caplog.records if r.levelno == logging.ERROR and failure["error_id"] in r.getMessage()]
    assert logged and logged[0].exc_info is not None  # the log has the traceback, under the id


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_photo_without_a_face_is_the_users_error(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    spec = await _spec(store, JobKind.CREATE_PERSONA)
    # not the final attempt: a program error would be retried; the user's error is final at once
    await JobRunner(NoFaceEngine(), store, LocalBus()).execute(spec.model_dump(mode="json"), final_attempt=False)
    job = await store.get_job(spec.job_id)
    failure = job.result["failure"]
    assert job.status == JobStatus.FAILED and failure["kind"] == NO_FACE and not failure["retryable"]
    assert job.error.startswith("no face found in the photo")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [r for r in caplog.records if r.exc_info]
    assert (await store.get_persona(spec.persona.persona_id)).status == "failed"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_training_with_no_matching_candidate_is_the_users_error(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    spec = await _spec(store, JobKind.TRAIN_PERSONA)
    # not the final attempt: the queue would retry a program error; this one is final at once
    await JobRunner(NoCandidateEngine(), store, LocalBus()).execute(spec.model_dump(mode="json"), final_attempt=False)
    job = await store.get_job(spec.job_id)
    failure = job.result["failure"]
    assert job.status == JobStatus.FAILED and failure["kind"] == NO_TRAINING_CANDIDATES and not failure["retryable"]
    assert job.error.startswith("none of the 3 images rendered for the training matched the persona's face (")
    assert job.error.endswith(f"(error id {failure['error_id']})") and job.attempts == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [r for r in caplog.records if r.exc_info]
