"""Finishing a job: the one place that records how a job ended and tells the bus.

Every way a job ends goes through :func:`finish_job`: the job runner (done, failed, cancelled
while running), both queues' cancel of a waiting job, the worker's timeout and the commands
layer's abandoned posts. Only the first outcome counts (a job cancelled while its last step ran,
or completed by an earlier attempt, is not recorded twice), and an event goes out only for the
outcome that was recorded. A done or failed job's live preview (engine.previews) is dropped with it.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from engine import metrics
from engine.jobs.events import Cancelled, Done, Failed, JobEvent
from engine.jobs.failures import Failure
from engine.jobs.progress import ProgressBus
from engine.specs import JobKind
from storage.models import JobStatus
from storage.repository import Store

log = logging.getLogger(__name__)


async def finish_job(
    store: Store,
    bus: ProgressBus,
    job_id: str,
    status: JobStatus,
    *,
    error: str | None = None,
    result: dict[str, Any] | None = None,
    seconds: float = 0.0,
    persona_update: tuple[int, dict[str, Any]] | None = None,
    turn_update: dict[str, Any] | None = None,
    make_current: bool = False,
) -> bool:
    """Record ``status`` (done, failed or cancelled) for the job and publish its event.

    Writes the outcome, the turn's images (``turn_update``, ``make_current``) and the persona's
    changes (``persona_update``: ``(persona id, column values)``) in one transaction. A failed
    create_persona job (failed or cancelled) marks its persona failed. Returns whether this outcome was recorded.
    """
    status = JobStatus(status)
    if not status.finished:
        raise ValueError(f"finish_job needs done, failed or cancelled, not {status}")
    if status == JobStatus.CANCELLED and error is None:
        error = "cancelled"
    if status in (JobStatus.FAILED, JobStatus.CANCELLED) and persona_update is None:
        persona_update = await _failed_persona(store, job_id)
    recorded = await store.finish_job(
        job_id,
        status,
        result=result,
        error=error,
        turn_update=turn_update,
        make_current=make_current,
        persona_update=persona_update,
    )
    if recorded:
        await _count(store, job_id, status, turn_update)
        if status != JobStatus.CANCELLED and getattr(bus, "previews", None) is not None:
            await bus.previews.drop(job_id)  # the result replaces the preview; a cancelled job keeps its last
        await bus.publish(outcome_event(job_id, status, error=error, seconds=seconds))
    return recorded


async def _count(store: Store, job_id: str, status: JobStatus, turn_update: dict[str, Any] | None) -> None:
    """Metrics of a recorded outcome: the job by kind and outcome, its run time, its scores."""
    job = await store.get_job(job_id)
    if job is None:
        return
    metrics.observe_finished(job.kind, str(status), metrics.seconds_between(job.started_at, job.finished_at))
    metrics.observe_scores(list((turn_update or {}).get("identity_scores") or []))


def outcome_event(job_id: str, status: JobStatus, *, error: str | None = None, seconds: float = 0.0) -> JobEvent:
    """The event that announces a recorded outcome."""
    if status == JobStatus.DONE:
        return Done.build(job_id, seconds=seconds)
    if status == JobStatus.CANCELLED:
        return Cancelled.build(job_id, error=error or "cancelled")
    return Failed.build(job_id, error=error or "")


async def _failed_persona(store: Store, job_id: str) -> tuple[int, dict[str, Any]] | None:
    """A create_persona job that failed or was cancelled leaves its persona without a face: failed."""
    job = await store.get_job(job_id)
    if job is None or job.kind != JobKind.CREATE_PERSONA:
        return None
    persona_id = ((job.spec or {}).get("persona") or {}).get("persona_id")
    return (int(persona_id), {"status": "failed"}) if persona_id else None


async def record_failure(store: Store, bus: ProgressBus, job_id: str, failure: Failure, exc: BaseException) -> bool:
    """Record a failure: the user's text (its kind's message and error id) as the job's error,
    the exception's own text (internal details) only in ``result["failure"]["detail"]``."""
    detail = {**failure.as_json(), "detail": f"{type(exc).__name__}: {exc}"}
    return await finish_job(store, bus, job_id, JobStatus.FAILED, error=failure.user_text, result={"failure": detail})


async def stop_if_finished_elsewhere(store: Store, job_id: str, cancel: threading.Event) -> None:
    """Set ``cancel`` when storage says the running job finished: an admin's cancel in the web
    process, a user's in a front end without redis, any process on the database."""
    if cancel.is_set():
        return
    status = await store.job_status(job_id)
    if status is not None and JobStatus(status).finished:
        log.info("job %s was %s elsewhere; stopping it", job_id, status)
        cancel.set()


async def announce_recorded_outcome(store: Store, bus: ProgressBus, job_id: str) -> None:
    """Publish the outcome another process recorded (its bus may not reach this one's front ends:
    no redis), so the user hears the job stopped (a done job was told already)."""
    job = await store.get_job(job_id)
    if job is not None and job.status in (JobStatus.CANCELLED, JobStatus.FAILED):
        await bus.publish(outcome_event(job_id, JobStatus(job.status), error=job.error))
