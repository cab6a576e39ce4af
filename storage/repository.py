"""The repository: every read and write the app does, each in one short transaction.

Objects returned are detached snapshots (``expire_on_commit=False``); change state through the
methods here, never by mutating a returned object. Users, personas, threads and turns are here;
jobs are in storage.job_records, products in storage.products, workspaces, roles and notices in
storage.workspaces, workspace-scoped lookups in storage.library, the activity log and review in
storage.activity (the Store includes them all).

Personas, products and posts belong to a workspace: created with ``workspace_id``, or without it
in their owner's home workspace (storage.workspace_keys).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from storage.activity import ActivityRecords
from storage.db import Database
from storage.job_records import UNFINISHED, JobRecords
from storage.library import WorkspaceLibrary
from storage.models import Persona, Thread, ThreadStatus, Turn, User, utcnow
from storage.names import name_key
from storage.products import ProductRecords
from storage.rows import DuplicateName, NotFound, found, new_turn
from storage.workspaces import WorkspaceRecords

__all__ = ["UNFINISHED", "DuplicateName", "NotFound", "Store"]


class Store(JobRecords, ProductRecords, WorkspaceRecords, WorkspaceLibrary, ActivityRecords):
    """The app's storage: users, personas, threads, turns, (from JobRecords) jobs, (from
    ProductRecords) the product library, (from WorkspaceRecords, WorkspaceLibrary and
    ActivityRecords) workspaces, roles, scoped lookups, the activity log and review."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def transaction(self) -> AbstractAsyncContextManager[None]:
        """The writes of this task inside the block as one transaction (:meth:`Database.transaction`)."""
        return self.db.transaction()

    async def workspace_of(self, owner_id: int, workspace_id: int | None) -> int:
        """``workspace_id``, or the owner's home workspace when it is ``None``."""
        if workspace_id is not None:
            return workspace_id
        return (await self.home_workspace(await self.get_user(owner_id))).id

    # -- users -------------------------------------------------------------------------------
    async def user(self, platform: str, platform_user_id: str, display_name: str = "") -> User:
        """The user with this platform id, created on first sight."""
        async with self.db.read() as s:  # nearly always found: no write lock for it
            known = await s.scalar(
                select(User).where(User.platform == platform, User.platform_user_id == platform_user_id)
            )
        if known is not None:
            if display_name and known.display_name != display_name:
                async with self.db.session() as s:
                    await s.execute(update(User).where(User.id == known.id).values(display_name=display_name))
                known.display_name = display_name
            return known
        try:
            async with self.db.session() as s:
                user = User(platform=platform, platform_user_id=platform_user_id, display_name=display_name)
                user.settings = {}
                s.add(user)
                await s.flush()
                return user
        except IntegrityError:  # created by a concurrent first event of the same user
            async with self.db.read() as s:
                existing = await s.scalar(
                    select(User).where(User.platform == platform, User.platform_user_id == platform_user_id)
                )
                return found(existing, "user", platform_user_id)

    async def get_user(self, user_id: int) -> User:
        async with self.db.read() as s:
            return found(await s.get(User, user_id), "user", user_id)

    async def update_user_settings(self, user_id: int, changes: dict[str, Any]) -> dict[str, Any]:
        async with self.db.session() as s:
            user = found(await s.get(User, user_id), "user", user_id)
            user.settings = {**(user.settings or {}), **changes}
            return user.settings

    async def set_current_thread(self, user_id: int, thread_id: int | None) -> None:
        async with self.db.session() as s:
            await s.execute(update(User).where(User.id == user_id).values(current_thread_id=thread_id))

    # -- personas ----------------------------------------------------------------------------
    async def create_persona(
        self,
        owner_id: int,
        name: str,
        archetype: str,
        lora_mix: Sequence[tuple[str, float]],
        seed: int,
        photo_key: str | None = None,
        *,
        workspace_id: int | None = None,
    ) -> Persona:
        """A new persona of the workspace (default: the owner's home), its owner its creator."""
        persona = Persona(
            workspace_id=await self.workspace_of(owner_id, workspace_id),
            owner_id=owner_id,
            name=name,
            name_key=name_key(name),
            archetype=archetype,
            lora_mix=[[n, float(w)] for n, w in lora_mix],
            seed=seed,
            photo_key=photo_key,
            status="pending",
        )
        try:
            async with self.db.session() as s:
                # a persona that failed (no face in its photo, a crashed render) gives its name up
                await s.execute(
                    update(Persona)
                    .where(
                        Persona.workspace_id == persona.workspace_id,
                        Persona.name_key == persona.name_key,
                        Persona.deleted_at.is_(None),
                        Persona.status == "failed",
                    )
                    .values(deleted_at=utcnow())
                )
                s.add(persona)
                await s.flush()
        except IntegrityError:
            raise DuplicateName(f"this workspace already has a persona named {name!r}") from None
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

    async def set_active_version(self, persona_id: int, version: int) -> None:
        """Put trained version ``version`` (0: the blend) of the persona in use."""
        async with self.db.session() as s:
            await s.execute(update(Persona).where(Persona.id == persona_id).values(active_version=version))

    async def get_persona(self, persona_id: int) -> Persona:
        async with self.db.read() as s:
            return found(await s.get(Persona, persona_id), "persona", persona_id)

    async def find_persona(self, owner_id: int, name: str) -> Persona | None:
        async with self.db.read() as s:
            return await s.scalar(
                select(Persona).where(
                    Persona.owner_id == owner_id,
                    Persona.name_key == name_key(name),
                    Persona.deleted_at.is_(None),
                )
            )

    async def list_personas(self, owner_id: int) -> list[Persona]:
        async with self.db.read() as s:
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
        references: Sequence[dict[str, Any]] = (),
        workspace_id: int | None = None,
    ) -> Thread:
        """A new post by ``owner_id`` in the workspace (default: the persona's)."""
        if workspace_id is None:
            workspace_id = (await self.get_persona(persona_id)).workspace_id
        thread = Thread(
            workspace_id=workspace_id,
            platform=platform,
            owner_id=owner_id,
            persona_id=persona_id,
            title=title,
            prompt=prompt,
            channel_id=channel_id,
            thread_id=thread_id,
            scene_key=scene_key,
            references=list(references),
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
        async with self.db.read() as s:
            return found(await s.get(Thread, thread_db_id), "thread", thread_db_id)

    async def find_thread(self, platform: str, thread_id: int) -> Thread | None:
        async with self.db.read() as s:
            return await s.scalar(
                select(Thread)
                .where(Thread.platform == platform, Thread.thread_id == thread_id)
                .order_by(Thread.id.desc())
                .limit(1)
            )

    async def list_threads(self, owner_id: int, limit: int = 20) -> list[Thread]:
        async with self.db.read() as s:
            rows = await s.scalars(
                select(Thread).where(Thread.owner_id == owner_id).order_by(Thread.id.desc()).limit(limit)
            )
            return list(rows)

    async def set_current_turn(self, thread_db_id: int, turn_id: int | None) -> None:
        async with self.db.session() as s:
            await s.execute(update(Thread).where(Thread.id == thread_db_id).values(current_turn_id=turn_id))

    async def update_thread_settings(self, thread_db_id: int, changes: dict[str, Any]) -> dict[str, Any]:
        async with self.db.session() as s:
            thread = found(await s.get(Thread, thread_db_id), "thread", thread_db_id)
            thread.settings = {**(thread.settings or {}), **changes}
            return thread.settings

    async def set_thread_status(self, thread_db_id: int, status: ThreadStatus) -> None:
        async with self.db.session() as s:
            await s.execute(update(Thread).where(Thread.id == thread_db_id).values(status=status))

    # -- turns -------------------------------------------------------------------------------
    async def add_turn(self, **fields: Any) -> Turn:
        """Store a turn; the fields are those of :func:`_new_turn`."""
        turn = new_turn(**fields)
        async with self.db.session() as s:
            s.add(turn)
            await s.flush()
        return turn

    async def get_turn(self, turn_id: int) -> Turn:
        async with self.db.read() as s:
            return found(await s.get(Turn, turn_id), "turn", turn_id)

    async def turns(self, thread_db_id: int) -> list[Turn]:
        """All turns of a thread in creation order (parents before children)."""
        async with self.db.read() as s:
            rows = await s.scalars(select(Turn).where(Turn.thread_id == thread_db_id).order_by(Turn.id))
            return list(rows)

    async def set_approved(self, turn_id: int, approved: bool = True) -> None:
        async with self.db.session() as s:
            await s.execute(update(Turn).where(Turn.id == turn_id).values(approved=approved))

    async def approved_turns(self, thread_db_id: int) -> list[Turn]:
        async with self.db.read() as s:
            rows = await s.scalars(
                select(Turn).where(Turn.thread_id == thread_db_id, Turn.approved.is_(True)).order_by(Turn.id)
            )
            return list(rows)
