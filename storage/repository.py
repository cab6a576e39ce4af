"""The repository: every read and write the app does, each in one short transaction.

Objects returned are detached snapshots (``expire_on_commit=False``); change state through the
methods here, never by mutating a returned object.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError

from storage.db import Database
from storage.models import (
    Job,
    JobStatus,
    Persona,
    Thread,
    ThreadStatus,
    Turn,
    TurnStatus,
    User,
    utcnow,
)

T = TypeVar("T")

#: statuses of jobs that still count against their user's limit
UNFINISHED = (JobStatus.HELD, JobStatus.QUEUED, JobStatus.RUNNING)


class DuplicateName(ValueError):
    pass


class NotFound(LookupError):
    pass


class Store:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- users -------------------------------------------------------------------------------
    async def user(self, platform: str, platform_user_id: str, display_name: str = "") -> User:
        """The user with this platform id, created on first sight."""
        async with self.db.session() as s:
            found = await s.scalar(
                select(User).where(User.platform == platform, User.platform_user_id == platform_user_id)
            )
            if found is not None:
                if display_name and found.display_name != display_name:
                    found.display_name = display_name
                return found
        try:
            async with self.db.session() as s:
                user = User(platform=platform, platform_user_id=platform_user_id, display_name=display_name)
                user.settings = {}
                s.add(user)
                await s.flush()
                return user
        except IntegrityError:  # created by a concurrent first event of the same user
            async with self.db.session() as s:
                found = await s.scalar(
                    select(User).where(User.platform == platform, User.platform_user_id == platform_user_id)
                )
                return _found(found, "user", platform_user_id)

    async def get_user(self, user_id: int) -> User:
        async with self.db.session() as s:
            return _found(await s.get(User, user_id), "user", user_id)

    async def update_user_settings(self, user_id: int, changes: dict[str, Any]) -> dict[str, Any]:
        async with self.db.session() as s:
            user = _found(await s.get(User, user_id), "user", user_id)
            user.settings = {**(user.settings or {}), **changes}
            return user.settings

    async def set_current_thread(self, user_id: int, thread_id: int | None) -> None:
        async with self.db.session() as s:
            await s.execute(update(User).where(User.id == user_id).values(current_thread_id=thread_id))

    # -- personas ----------------------------------------------------------------------------
    async def create_persona(
        self, owner_id: int, name: str, archetype: str, lora_mix: Sequence[tuple[str, float]], seed: int
    ) -> Persona:
        persona = Persona(
            owner_id=owner_id,
            name=name,
            archetype=archetype,
            lora_mix=[[n, float(w)] for n, w in lora_mix],
            seed=seed,
            status="pending",
        )
        try:
            async with self.db.session() as s:
                s.add(persona)
                await s.flush()
        except IntegrityError:
            raise DuplicateName(f"you already have a persona named {name!r}") from None
        return persona

    async def persona_ready(
        self,
        persona_id: int,
        reference_key: str | None,
        embedding: Sequence[float] | None,
        lora_mix: Sequence[tuple[str, float]] | None = None,
    ) -> None:
        values: dict[str, Any] = {
            "reference_key": reference_key,
            "face_embedding": list(embedding) if embedding is not None else None,
            "status": "ready",
        }
        if lora_mix is not None:
            values["lora_mix"] = [[name, float(weight)] for name, weight in lora_mix]
        async with self.db.session() as s:
            await s.execute(update(Persona).where(Persona.id == persona_id).values(**values))

    async def get_persona(self, persona_id: int) -> Persona:
        async with self.db.session() as s:
            return _found(await s.get(Persona, persona_id), "persona", persona_id)

    async def find_persona(self, owner_id: int, name: str) -> Persona | None:
        async with self.db.session() as s:
            return await s.scalar(
                select(Persona).where(
                    Persona.owner_id == owner_id,
                    func.lower(Persona.name) == name.lower(),
                    Persona.deleted_at.is_(None),
                )
            )

    async def list_personas(self, owner_id: int) -> list[Persona]:
        async with self.db.session() as s:
            rows = await s.scalars(
                select(Persona)
                .where(Persona.owner_id == owner_id, Persona.deleted_at.is_(None))
                .order_by(Persona.created_at, Persona.id)
            )
            return list(rows)

    async def delete_persona(self, persona_id: int) -> None:
        """Soft delete: the row stays (threads still point at it), the name is free again."""
        async with self.db.session() as s:
            await s.execute(update(Persona).where(Persona.id == persona_id).values(deleted_at=utcnow()))

    # -- threads -----------------------------------------------------------------------------
    async def create_thread(
        self,
        *,
        platform: str,
        owner_id: int,
        persona_id: int,
        title: str,
        prompt: str,
        channel_id: int | None = None,
        thread_id: int | None = None,
        scene_key: str | None = None,
        settings: dict[str, Any] | None = None,
    ) -> Thread:
        thread = Thread(
            platform=platform,
            owner_id=owner_id,
            persona_id=persona_id,
            title=title,
            prompt=prompt,
            channel_id=channel_id,
            thread_id=thread_id,
            scene_key=scene_key,
            settings=settings or {},
            status=ThreadStatus.OPEN,
        )
        async with self.db.session() as s:
            s.add(thread)
            await s.flush()
        return thread

    async def bind_thread(self, thread_db_id: int, channel_id: int | None, thread_id: int | None) -> None:
        async with self.db.session() as s:
            await s.execute(
                update(Thread).where(Thread.id == thread_db_id).values(channel_id=channel_id, thread_id=thread_id)
            )

    async def get_thread(self, thread_db_id: int) -> Thread:
        async with self.db.session() as s:
            return _found(await s.get(Thread, thread_db_id), "thread", thread_db_id)

    async def find_thread(self, platform: str, thread_id: int) -> Thread | None:
        async with self.db.session() as s:
            return await s.scalar(
                select(Thread)
                .where(Thread.platform == platform, Thread.thread_id == thread_id)
                .order_by(Thread.id.desc())
                .limit(1)
            )

    async def list_threads(self, owner_id: int, limit: int = 20) -> list[Thread]:
        async with self.db.session() as s:
            rows = await s.scalars(
                select(Thread).where(Thread.owner_id == owner_id).order_by(Thread.id.desc()).limit(limit)
            )
            return list(rows)

    async def set_current_turn(self, thread_db_id: int, turn_id: int | None) -> None:
        async with self.db.session() as s:
            await s.execute(update(Thread).where(Thread.id == thread_db_id).values(current_turn_id=turn_id))

    async def update_thread_settings(self, thread_db_id: int, changes: dict[str, Any]) -> dict[str, Any]:
        async with self.db.session() as s:
            thread = _found(await s.get(Thread, thread_db_id), "thread", thread_db_id)
            thread.settings = {**(thread.settings or {}), **changes}
            return thread.settings

    async def set_thread_status(self, thread_db_id: int, status: ThreadStatus) -> None:
        async with self.db.session() as s:
            await s.execute(update(Thread).where(Thread.id == thread_db_id).values(status=status))

    # -- turns -------------------------------------------------------------------------------
    async def add_turn(self, **fields: Any) -> Turn:
        """Store a turn; the fields are those of :func:`_new_turn`."""
        turn = _new_turn(**fields)
        async with self.db.session() as s:
            s.add(turn)
            await s.flush()
        return turn

    async def get_turn(self, turn_id: int) -> Turn:
        async with self.db.session() as s:
            return _found(await s.get(Turn, turn_id), "turn", turn_id)

    async def turns(self, thread_db_id: int) -> list[Turn]:
        """All turns of a thread in creation order (parents before children)."""
        async with self.db.session() as s:
            rows = await s.scalars(select(Turn).where(Turn.thread_id == thread_db_id).order_by(Turn.id))
            return list(rows)

    async def lineage(self, turn_id: int) -> list[Turn]:
        """The path from the thread's first turn down to ``turn_id``."""
        path: list[Turn] = []
        async with self.db.session() as s:
            current: int | None = turn_id
            while current is not None:
                turn = _found(await s.get(Turn, current), "turn", current)
                path.append(turn)
                current = turn.parent_id
        return path[::-1]

    async def finish_turn(self, turn_id: int, status: TurnStatus) -> None:
        async with self.db.session() as s:
            await s.execute(update(Turn).where(Turn.id == turn_id).values(status=status))

    async def set_approved(self, turn_id: int, approved: bool = True) -> None:
        async with self.db.session() as s:
            await s.execute(update(Turn).where(Turn.id == turn_id).values(approved=approved))

    async def approved_turns(self, thread_db_id: int) -> list[Turn]:
        async with self.db.session() as s:
            rows = await s.scalars(
                select(Turn).where(Turn.thread_id == thread_db_id, Turn.approved.is_(True)).order_by(Turn.id)
            )
            return list(rows)

    # -- jobs --------------------------------------------------------------------------------
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
        """Store a job, and the turn that will receive its result, in one transaction."""
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
        async with self.db.session() as s:
            s.add(job)
            await s.flush()
            if turn is not None:
                s.add(_new_turn(job_id=job_id, **turn))
        return job

    async def get_job(self, job_id: str) -> Job | None:
        async with self.db.session() as s:
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
            job.status = status
            job.result = result
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
            job = _found(await s.get(Job, job_id), "job", job_id)
            job.delivery_attempts = (job.delivery_attempts or 0) + 1
            job.delivery_started_at = None
            job.delivery_retry_at = utcnow() + timedelta(seconds=retry_after_s)
            job.delivered = give_up
            return job.delivery_attempts

    async def undelivered_jobs(self, platform: str) -> list[Job]:
        async with self.db.session() as s:
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
        async with self.db.session() as s:
            rows = await s.scalars(
                select(Job).where(Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING])).order_by(Job.created_at)
            )
            return list(rows)

    async def thread_jobs(self, thread_db_id: int, *, unfinished_only: bool = True) -> list[Job]:
        async with self.db.session() as s:
            query = select(Job).where(Job.thread_id == thread_db_id)
            if unfinished_only:
                query = query.where(Job.status.in_(UNFINISHED))
            return list(await s.scalars(query.order_by(Job.created_at)))

    async def held_threads(self, created_before: datetime) -> list[int]:
        """Posts whose jobs still wait for a platform thread that was never opened."""
        async with self.db.session() as s:
            rows = await s.scalars(
                select(Job.thread_id)
                .where(Job.status == JobStatus.HELD, Job.created_at < created_before, Job.thread_id.is_not(None))
                .distinct()
            )
            return [int(r) for r in rows]

    async def release_held(self, thread_db_id: int) -> list[Job]:
        """The post's platform thread exists now: its held jobs become queued."""
        async with self.db.session() as s:
            held = list(await s.scalars(select(Job).where(Job.thread_id == thread_db_id, Job.status == JobStatus.HELD)))
            for job in held:
                job.status = JobStatus.QUEUED
            return held

    async def user_jobs(self, user_id: int, *, unfinished_only: bool = True) -> list[Job]:
        async with self.db.session() as s:
            query = select(Job).where(Job.user_id == user_id)
            if unfinished_only:
                query = query.where(Job.status.in_(UNFINISHED))
            rows = await s.scalars(query.order_by(Job.created_at))
            return list(rows)

    async def job_for_turn(self, turn_id: int) -> Job | None:
        async with self.db.session() as s:
            turn = await s.get(Turn, turn_id)
            if turn is None or turn.job_id is None:
                return None
            return await s.get(Job, turn.job_id)

    async def turn_for_job(self, job_id: str) -> Turn | None:
        async with self.db.session() as s:
            return await s.scalar(select(Turn).where(Turn.job_id == job_id))


def _found(obj: T | None, what: str, ident: object) -> T:
    if obj is None:
        raise NotFound(f"no {what} {ident}")
    return obj


def _new_turn(
    *,
    thread_id: int,
    parent_id: int | None,
    kind: str,
    instruction: str = "",
    seed: int = 0,
    params: dict[str, Any] | None = None,
    job_id: str | None = None,
    image_keys: Sequence[str] = (),
    status: TurnStatus = TurnStatus.PENDING,
) -> Turn:
    return Turn(
        thread_id=thread_id,
        parent_id=parent_id,
        kind=kind,
        instruction=instruction,
        seed=seed,
        params=params or {},
        job_id=job_id,
        image_keys=list(image_keys),
        identity_scores=[],
        status=status,
        approved=False,
    )
