"""Read-only queries of the web studio (bot/web): a workspace's post cards (filtered by author,
persona and state), the images a workspace's members may see, and the operators' view of the
queue. Each runs in one short transaction; a page needs a fixed number of queries however many posts it shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select

from storage.db import Database
from storage.models import Job, JobStatus, Persona, Product, Thread, Turn, User


@dataclass(frozen=True)
class PostCard:
    """One post in the gallery grid: its lead image is the last approved one, else the current."""

    id: int
    title: str
    prompt: str
    status: str
    created_at: datetime
    persona_id: int
    persona_name: str
    cover_key: str | None
    approved: bool
    image_count: int
    author_id: int = 0
    author_name: str = ""


class StudioReads:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def post_cards(
        self,
        owner_id: int | None = None,
        *,
        workspace_id: int | None = None,
        persona_id: int | None = None,
        status: str | None = None,
        limit: int = 500,
    ) -> list[PostCard]:
        """Posts newest first: a workspace's (``workspace_id``), optionally of one author
        (``owner_id``), one persona and/or one status."""
        if owner_id is None and workspace_id is None:
            raise ValueError("post_cards needs a workspace or an author")
        query = (
            select(Thread, Persona.name, User.display_name, User.platform_user_id)
            .join(Persona, Persona.id == Thread.persona_id)
            .join(User, User.id == Thread.owner_id)
            .order_by(Thread.id.desc())
            .limit(limit)
        )
        if workspace_id is not None:
            query = query.where(Thread.workspace_id == workspace_id)
        if owner_id is not None:
            query = query.where(Thread.owner_id == owner_id)
        if persona_id is not None:
            query = query.where(Thread.persona_id == persona_id)
        if status is not None:
            query = query.where(Thread.status == status)
        async with self.db.session() as s:
            rows = (await s.execute(query)).all()
            ids = [row[0].id for row in rows]
            current = [row[0].current_turn_id for row in rows if row[0].current_turn_id is not None]
            turns = (
                list(
                    await s.scalars(
                        select(Turn)
                        .where(Turn.thread_id.in_(ids), or_(Turn.approved.is_(True), Turn.id.in_(current)))
                        .order_by(Turn.id)
                    )
                )
                if ids
                else []
            )
        approved: dict[int, Turn] = {}
        by_id = {turn.id: turn for turn in turns}
        for turn in turns:
            if turn.approved and turn.image_keys:
                approved[turn.thread_id] = turn  # the last approved turn wins (ordered by id)
        cards = []
        for thread, persona_name, display_name, platform_user_id in rows:
            lead = approved.get(thread.id) or by_id.get(thread.current_turn_id or -1)
            keys = list(lead.image_keys) if lead is not None else []
            cards.append(
                PostCard(
                    id=thread.id,
                    title=thread.title,
                    prompt=thread.prompt,
                    status=thread.status,
                    created_at=thread.created_at,
                    persona_id=thread.persona_id,
                    persona_name=persona_name,
                    cover_key=keys[0] if keys else None,
                    approved=thread.id in approved,
                    image_count=len(keys),
                    author_id=thread.owner_id,
                    author_name=display_name or platform_user_id,
                )
            )
        return cards

    async def post_counts(self, owner_id: int) -> dict[int, int]:
        """Posts per persona of this owner."""
        async with self.db.session() as s:
            rows = await s.execute(
                select(Thread.persona_id, func.count()).where(Thread.owner_id == owner_id).group_by(Thread.persona_id)
            )
            return {int(persona_id): int(count) for persona_id, count in rows.all()}

    async def workspace_post_counts(self, workspace_id: int) -> dict[int, int]:
        """Posts per persona of this workspace."""
        async with self.db.session() as s:
            rows = await s.execute(
                select(Thread.persona_id, func.count())
                .where(Thread.workspace_id == workspace_id)
                .group_by(Thread.persona_id)
            )
            return {int(persona_id): int(count) for persona_id, count in rows.all()}

    async def workspace_image_keys(self, workspace_id: int) -> set[str]:
        """Every blob key a workspace's members may see: its posts' images, scenes and job inputs,
        its personas' portraits and its products' images (nothing of another workspace)."""
        async with self.db.session() as s:
            turn_keys = await s.scalars(
                select(Turn.image_keys)
                .join(Thread, Thread.id == Turn.thread_id)
                .where(Thread.workspace_id == workspace_id)
            )
            keys = {key for keys in turn_keys for key in (keys or []) if isinstance(key, str)}
            keys.update(await _clip_keys(s, Thread.workspace_id == workspace_id))
            for column, where in (
                (Thread.scene_key, Thread.workspace_id == workspace_id),
                (Persona.reference_key, Persona.workspace_id == workspace_id),
                (Product.image_key, Product.workspace_id == workspace_id),
            ):
                keys.update(str(key) for key in await s.scalars(select(column).where(where, column.is_not(None))))
            specs = await s.scalars(
                select(Job.spec).join(Thread, Thread.id == Job.thread_id).where(Thread.workspace_id == workspace_id)
            )
            for spec in specs:  # the images a job was given: context, references
                keys.update(spec_image_keys(spec))
        return keys

    async def image_keys_of(self, owner_id: int) -> set[str]:
        """Every blob key the owner may see: their turns' images, scenes and persona portraits."""
        async with self.db.session() as s:
            turn_keys = await s.scalars(
                select(Turn.image_keys).join(Thread, Thread.id == Turn.thread_id).where(Thread.owner_id == owner_id)
            )
            keys = {key for keys in turn_keys for key in (keys or []) if isinstance(key, str)}
            keys.update(await _clip_keys(s, Thread.owner_id == owner_id))
            scenes = await s.scalars(
                select(Thread.scene_key).where(Thread.owner_id == owner_id, Thread.scene_key.is_not(None))
            )
            portraits = await s.scalars(
                select(Persona.reference_key).where(Persona.owner_id == owner_id, Persona.reference_key.is_not(None))
            )
            keys.update(str(key) for key in scenes)
            keys.update(str(key) for key in portraits)
            specs = await s.scalars(select(Job.spec).where(Job.user_id == owner_id))
            for spec in specs:  # the images a job was given: context, references
                keys.update(spec_image_keys(spec))
        return keys

    # -- operators -----------------------------------------------------------------------------
    async def job_counts(self) -> dict[str, int]:
        """Jobs per status (every status present, zero when none)."""
        async with self.db.session() as s:
            rows = (await s.execute(select(Job.status, func.count()).group_by(Job.status))).all()
        counts = {str(status): 0 for status in JobStatus}
        counts.update({str(status): int(count) for status, count in rows})
        return counts

    async def jobs_in(self, statuses: tuple[JobStatus, ...], limit: int = 100) -> list[Job]:
        """Jobs in these statuses, oldest first (the queue as it will be served)."""
        async with self.db.session() as s:
            rows = await s.scalars(
                select(Job).where(Job.status.in_(statuses)).order_by(Job.created_at, Job.id).limit(limit)
            )
            return list(rows)

    async def recent_failures(self, limit: int = 20) -> list[Job]:
        async with self.db.session() as s:
            rows = await s.scalars(
                select(Job)
                .where(Job.status == JobStatus.FAILED)
                .order_by(Job.finished_at.desc().nulls_last(), Job.id.desc())
                .limit(limit)
            )
            return list(rows)

    async def ping(self) -> None:
        """Raises when the database cannot answer."""
        async with self.db.engine.connect() as connection:
            await connection.exec_driver_sql("SELECT 1")


async def _clip_keys(s: Any, where: Any) -> set[str]:
    """The MP4s and posters of the clips (``Turn.params["video"]``) of the threads ``where`` picks."""
    rows = await s.scalars(
        select(Turn.params).join(Thread, Thread.id == Turn.thread_id).where(where, Turn.kind == "video")
    )
    videos = [(params or {}).get("video") or {} for params in rows]
    return {str(v[k]) for v in videos for k in ("key", "poster_key", "small_key") if v.get(k)}


def spec_image_keys(spec: object) -> set[str]:
    """Blob keys a job spec names: ``context_keys``, the ``key`` of each of its ``references`` and a
    region edit's masks (``region.mask_key``, ``region.mask_keys``)."""
    if not isinstance(spec, dict):
        return set()
    keys = {key for key in spec.get("context_keys") or [] if isinstance(key, str)}
    for ref in spec.get("references") or []:
        if isinstance(ref, dict) and isinstance(ref.get("key"), str):
            keys.add(ref["key"])
    region = spec.get("region")
    if isinstance(region, dict):
        masks = [region.get("mask_key"), *(region.get("mask_keys") or [])]
        keys.update(key for key in masks if isinstance(key, str))
    return keys
