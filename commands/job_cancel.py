"""Cancelling a job: through the queue when it holds it, else in storage (held, or lost by redis).
The chat's ``/cancel``, a post whose thread could not be opened and the web studio's operators all
cancel here."""

from __future__ import annotations

from engine.jobs.outcomes import finish_job
from engine.jobs.progress import ProgressBus
from engine.jobs.queue import JobQueue
from storage.models import JobStatus
from storage.repository import Store


async def cancel_job(
    store: Store, queue: JobQueue | None, bus: ProgressBus, job_id: str, *, error: str, told: bool = False
) -> bool:
    """False when the job had already finished or is unknown; else it is cancelled (a running one
    stops at its next step and is recorded then).

    ``told``: the owner asked for it in chat and the answer tells them (``/cancel``); recorded on
    the job first, so that its delivery, if it ends cancelled, sends nothing new (front ends only
    update the job's status). Operators' cancels and abandoned posts leave it False."""
    job = await store.get_job(job_id)
    if job is None or JobStatus(job.status).finished:
        return False
    if told and not await store.note_cancel_told(job_id):
        return False  # it finished meanwhile
    if queue is not None and await queue.cancel(job_id):
        return True
    return await finish_job(store, bus, job_id, JobStatus.CANCELLED, error=error)
