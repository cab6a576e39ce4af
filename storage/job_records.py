"""The repository's job records: creating, starting and finishing jobs, holding and releasing
them, and claiming their delivery. :class:`storage.repository.Store` includes them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError

from storage.db import Database
from storage.models import TRAINING_KIND, Job, JobStatus, Persona, Thread, Turn, TurnStatus, utcnow
from storage.rows import found, new_turn

#: statuses of jobs that still count against their user's limit
UNFINISHED = (JobStatus.HELD, JobStatus.QUEUED, JobStatus.RUNNING)
#: in a job's ``result``: its owner asked for the cancel in chat and was told then (kept only if it ends cancelled)
CANCEL_TOLD = "cancel_told"


class TrainingInProgress(Exception):
    """The user already has an unfinished training (the database's unique partial index)."""


class JobRecords:
    """Every read and write of jobs, each in one short transaction."""

    db: Database

    async def create_job(
        self,
        job_id: str,
        kind: str,
        spec: dict[str, Any],
        *,
        user_id: int | None,
        thread_id: int | None,
        platform: str,
        channel_id: int | None = None,
        status: JobStatus = JobStatus.QUEUED,
        turn: dict[str, Any] | None = None,
    ) -> Job:
        """Store a job, and the turn that will receive its result, in one transaction.
        :class:`TrainingInProgress` for a second unfinished training of one user."""
        job = Job(
            id=job_id,
            kind=kind,
            spec=spec,
            user_id=user_id,
            thread_id=thread_id,
            platform=platform,
            channel_id=channel_id,
            status=status,
            progress=0.0,
            attempts=0,
            delivered=False,
            delivery_attempts=0,
        )
        try:
            async with self.db.session() as s:
                s.add(job)
                await s.flush()
                if turn is not None:
                    s.add(new_turn(job_id=job_id, **turn))
        except IntegrityError as exc:
            if _training_conflict(exc, kind):
                raise TrainingInProgress(f"user {user_id} already has a training running") from exc
            raise
        return job

    async def get_job(self, job_id: str) -> Job | None:
        async with self.db.read() as s:
            return await s.get(Job, job_id)

    async def start_job(self, job_id: str) -> Job | None:
        """Mark a job running (one more attempt). ``None`` if it is finished or unknown."""
        async with self.db.session() as s:
            job = await s.get(Job, job_id)
            if job is None or job.status not in (JobStatus.QUEUED, JobStatus.RUNNING):
                return None  # finished, or held until its thread exists
            job.status = JobStatus.RUNNING
            job.attempts += 1
            job.started_at = utcnow()
            return job

    async def job_status(self, job_id: str) -> str | None:
        """A job's status alone (one indexed read; a running job polls it for cancels)."""
        async with self.db.read() as s:
            return await s.scalar(select(Job.status).where(Job.id == job_id))

    async def set_progress(self, job_id: str, progress: float) -> None:
        async with self.db.session() as s:
            await s.execute(update(Job).where(Job.id == job_id).values(progress=progress))

    async def finish_job(
        self,
        job_id: str,
        status: JobStatus,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        turn_update: dict[str, Any] | None = None,
        make_current: bool = False,
        persona_update: tuple[int, dict[str, Any]] | None = None,
    ) -> bool:
        """Record a job's outcome, and its turn's images, in one transaction.

        Only the first outcome counts: returns False (and changes nothing) when the job had
        already finished, e.g. cancelled while its last step ran or completed by a retry.
        """
        async with self.db.session() as s:
            job = await s.get(Job, job_id, with_for_update=True)
            if job is None or JobStatus(job.status).finished:
                return False
            told = status == JobStatus.CANCELLED and bool((job.result or {}).get(CANCEL_TOLD))
            job.status = status
            job.result = {**(result or {}), CANCEL_TOLD: True} if told else result
            job.error = error
            job.finished_at = utcnow()
            if status == JobStatus.DONE:
                job.progress = 1.0
            if persona_update is not None:
                persona_id, values = persona_update
                await s.execute(update(Persona).where(Persona.id == persona_id).values(**values))
            turn = await s.scalar(select(Turn).where(Turn.job_id == job_id))
            if turn is not None:
                turn.status = {
                    JobStatus.DONE: TurnStatus.DONE,
                    JobStatus.FAILED: TurnStatus.FAILED,
                    JobStatus.CANCELLED: TurnStatus.CANCELLED,
                }.get(status, TurnStatus.PENDING)
                for key, value in (turn_update or {}).items():
                    setattr(turn, key, value)
                if make_current and status == JobStatus.DONE:
                    await s.execute(update(Thread).where(Thread.id == turn.thread_id).values(current_turn_id=turn.id))
            return True

    async def note_cancel_told(self, job_id: str) -> bool:
        """Record, before cancelling it, that the job's owner asked for its cancel and was told so
        (the answer to their ``/cancel``): its delivery then sends nothing new. It counts only if
        the job ends cancelled: :meth:`finish_job` drops it with any other outcome (a job that
        finished as the cancel came still delivers its result). False when it had already finished."""
        async with self.db.session() as s:
            job = await s.get(Job, job_id, with_for_update=True)
            if job is None or JobStatus(job.status).finished:
                return False
            job.result = {**(job.result or {}), CANCEL_TOLD: True}
            return True

    async def claim_delivery(self, job_id: str, *, reclaim_before: datetime | None = None) -> bool:
        """Atomically claim a finished job's delivery; True for exactly one caller.

        A claim older than ``reclaim_before`` (left by a front end that died mid-delivery) may be
        taken over. Call :meth:`confirm_delivery` once the result is out, or
        :meth:`release_delivery` when sending failed.
        """
        now = utcnow()
        unclaimed = Job.delivery_started_at.is_(None)
        if reclaim_before is not None:
            unclaimed = or_(unclaimed, Job.delivery_started_at < reclaim_before)
        due = or_(Job.delivery_retry_at.is_(None), Job.delivery_retry_at <= now)
        async with self.db.session() as s:
            result = await s.execute(
                update(Job)
                .where(Job.id == job_id, Job.delivered.is_(False), unclaimed, due)
                .values(delivery_started_at=now)
            )
            return (result.rowcount or 0) == 1  # type: ignore[attr-defined]

    async def confirm_delivery(self, job_id: str) -> None:
        async with self.db.session() as s:
            await s.execute(update(Job).where(Job.id == job_id).values(delivered=True))

    async def release_delivery(self, job_id: str, *, retry_after_s: float = 0.0, give_up: bool = False) -> int:
        """Give a claim back after a failed send: tried again after ``retry_after_s``, or never
        again with ``give_up`` (marked delivered). Returns the failed attempts so far."""
        async with self.db.session() as s:
            job = found(await s.get(Job, job_id), "job", job_id)
            job.delivery_attempts = (job.delivery_attempts or 0) + 1
            job.delivery_started_at = None
            job.delivery_retry_at = utcnow() + timedelta(seconds=retry_after_s)
            job.delivered = give_up
            return job.delivery_attempts

    async def undelivered_jobs(self, platform: str) -> list[Job]:
        async with self.db.read() as s:
            rows = await s.scalars(
                select(Job)
                .where(
                    Job.platform == platform,
                    Job.delivered.is_(False),
                    Job.status.in_([JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED]),
                )
                .order_by(Job.finished_at, Job.created_at)
            )
            return list(rows)

    async def unfinished_jobs(self) -> list[Job]:
        async with self.db.read() as s:
            rows = await s.scalars(
                select(Job).where(Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING])).order_by(Job.created_at)
            )
            return list(rows)

    async def thread_jobs(self, thread_db_id: int, *, unfinished_only: bool = True) -> list[Job]:
        async with self.db.read() as s:
            query = select(Job).where(Job.thread_id == thread_db_id)
            if unfinished_only:
                query = query.where(Job.status.in_(UNFINISHED))
            return list(await s.scalars(query.order_by(Job.created_at)))

    async def held_threads(self, created_before: datetime) -> list[int]:
        """Posts whose jobs still wait for a platform thread that was never opened."""
        async with self.db.read() as s:
            rows = await s.scalars(
                select(Job.thread_id)
                .where(Job.status == JobStatus.HELD, Job.created_at < created_before, Job.thread_id.is_not(None))
                .distinct()
            )
            return [int(r) for r in rows]

    async def release_held(self, thread_db_id: int) -> list[Job]:
        """The post's platform thread exists now: its held jobs become queued, except those whose
        persona is still being created (the conversation releases them here again once it is
        ready)."""
        async with self.db.session() as s:
            held = list(await s.scalars(select(Job).where(Job.thread_id == thread_db_id, Job.status == JobStatus.HELD)))
            released = []
            for job in held:
                persona_id = job_persona_id(job)
                persona = await s.get(Persona, persona_id) if persona_id else None
                if persona is not None and persona.status != "ready":
                    continue
                waits_for = (job.spec or {}).get("wait_for_turn")
                turn = await s.get(Turn, int(waits_for)) if waits_for else None
                if waits_for and (turn is None or turn.status != TurnStatus.DONE):
                    continue  # an edit waiting for the post's first images
                job.status = JobStatus.QUEUED
                released.append(job)
            return released

    async def held_jobs_waiting_for(self, turn_id: int) -> list[Job]:
        """Held edits (oldest first) that wait for this turn's images (sent while it rendered)."""
        async with self.db.read() as s:
            turn = await s.get(Turn, turn_id)
            if turn is None:
                return []
            held = await s.scalars(
                select(Job)
                .where(Job.thread_id == turn.thread_id, Job.status == JobStatus.HELD)
                .order_by(Job.created_at)
            )
            return [job for job in held if (job.spec or {}).get("wait_for_turn") == turn_id]

    async def held_jobs_for_persona(self, persona_id: int) -> list[Job]:
        """Held jobs (oldest first) whose spec names this persona: they wait for it to be ready."""
        async with self.db.read() as s:
            held = await s.scalars(select(Job).where(Job.status == JobStatus.HELD).order_by(Job.created_at))
            return [job for job in held if job_persona_id(job) == persona_id]

    async def set_job_spec(self, job_id: str, spec: dict[str, Any]) -> None:
        """Replace a job's spec (a held job's, refreshed with its persona once that is ready)."""
        async with self.db.session() as s:
            job = found(await s.get(Job, job_id), "job", job_id)
            job.spec = spec

    async def set_region_masks(self, job_id: str, mask_keys: list[str]) -> None:
        """Record a region edit's masks (blob keys, one per target) on its job's spec and its turn's
        params, in one transaction, before the worker renders: a retry then reuses them."""
        async with self.db.session() as s:
            job = found(await s.get(Job, job_id, with_for_update=True), "job", job_id)
            spec = dict(job.spec or {})
            spec["region"] = {**(spec.get("region") or {}), "mask_keys": list(mask_keys)}
            job.spec = spec
            turn = await s.scalar(select(Turn).where(Turn.job_id == job_id))
            if turn is not None:
                params = dict(turn.params or {})
                params["region"] = {**(params.get("region") or {}), "mask_keys": list(mask_keys)}
                turn.params = params

    async def unfinished_job_count(self, user_id: int) -> int:
        """How many of the user's jobs are waiting or running (a count: no rows loaded)."""
        async with self.db.read() as s:
            query = select(func.count()).select_from(Job).where(Job.user_id == user_id, Job.status.in_(UNFINISHED))
            return int(await s.scalar(query) or 0)

    async def user_jobs(self, user_id: int, *, unfinished_only: bool = True) -> list[Job]:
        async with self.db.read() as s:
            query = select(Job).where(Job.user_id == user_id)
            if unfinished_only:
                query = query.where(Job.status.in_(UNFINISHED))
            rows = await s.scalars(query.order_by(Job.created_at))
            return list(rows)

    async def job_for_turn(self, turn_id: int) -> Job | None:
        """The job that rendered a turn (its spec holds the context images and targets)."""
        async with self.db.read() as s:
            turn = await s.get(Turn, turn_id)
            return await s.get(Job, turn.job_id) if turn is not None and turn.job_id else None

    async def turn_for_job(self, job_id: str) -> Turn | None:
        async with self.db.read() as s:
            return await s.scalar(select(Turn).where(Turn.job_id == job_id))


def cancel_told(job: Job) -> bool:
    """A cancelled job whose owner was told of the cancel when they asked for it (chat ``/cancel``)."""
    return job.status == JobStatus.CANCELLED and bool((job.result or {}).get(CANCEL_TOLD))


def job_persona_id(job: Job) -> int | None:
    """The persona a job's spec names (``spec.persona.persona_id``), or None."""
    persona = (job.spec or {}).get("persona") or {}
    persona_id = persona.get("persona_id") if isinstance(persona, dict) else None
    return int(persona_id) if persona_id else None


def _training_conflict(exc: IntegrityError, kind: str) -> bool:
    """The one-training-per-user index refused the row (PostgreSQL names the index, SQLite its
    column ``jobs.user_id``)."""
    text = str(exc.orig)
    return kind == TRAINING_KIND and ("uq_jobs_one_training_per_user" in text or "jobs.user_id" in text)
