"""Workspace-scoped reads: a workspace's personas, products and posts, by name or id.

Every lookup takes the workspace it is asked from; a persona, product or post of another
workspace is not found (``None``), whatever its name or id. Names compare under
storage.names.name_key. :class:`storage.repository.Store` includes these methods.
"""

from __future__ import annotations

from sqlalchemy import bindparam, select

from storage.db import Database
from storage.models import Persona, Product, Thread
from storage.names import name_key

#: asked by every /post and edit: built once, with bind parameters
_PERSONA_BY_NAME = select(Persona).where(
    Persona.workspace_id == bindparam("workspace_id"),
    Persona.name_key == bindparam("name_key"),
    Persona.deleted_at.is_(None),
)


class WorkspaceLibrary:
    db: Database

    # -- personas ----------------------------------------------------------------------------
    async def find_persona_in(self, workspace_id: int, name: str) -> Persona | None:
        async with self.db.read() as s:
            return await s.scalar(_PERSONA_BY_NAME, {"workspace_id": workspace_id, "name_key": name_key(name)})

    async def list_personas_in(self, workspace_id: int) -> list[Persona]:
        async with self.db.read() as s:
            rows = await s.scalars(
                select(Persona)
                .where(Persona.workspace_id == workspace_id, Persona.deleted_at.is_(None))
                .order_by(Persona.created_at, Persona.id)
            )
            return list(rows)

    async def persona_in(self, workspace_id: int, persona_id: int) -> Persona | None:
        """The persona with this id if it belongs to the workspace (deleted ones included)."""
        async with self.db.read() as s:
            persona = await s.get(Persona, persona_id)
        return persona if persona is not None and persona.workspace_id == workspace_id else None

    # -- products ----------------------------------------------------------------------------
    async def find_product_in(self, workspace_id: int, name: str) -> Product | None:
        async with self.db.read() as s:
            return await s.scalar(
                select(Product).where(
                    Product.workspace_id == workspace_id,
                    Product.name_key == name_key(name),
                    Product.deleted_at.is_(None),
                )
            )

    async def list_products_in(self, workspace_id: int) -> list[Product]:
        async with self.db.read() as s:
            rows = await s.scalars(
                select(Product)
                .where(Product.workspace_id == workspace_id, Product.deleted_at.is_(None))
                .order_by(Product.created_at, Product.id)
            )
            return list(rows)

    # -- posts -------------------------------------------------------------------------------
    async def thread_in(self, workspace_id: int, thread_db_id: int) -> Thread | None:
        """The post with this id if it belongs to the workspace."""
        async with self.db.read() as s:
            thread = await s.get(Thread, thread_db_id)
        return thread if thread is not None and thread.workspace_id == workspace_id else None

    async def list_threads_in(
        self,
        workspace_id: int,
        *,
        author_id: int | None = None,
        persona_id: int | None = None,
        status: str | None = None,
        limit: int = 20,
    ) -> list[Thread]:
        """The workspace's posts, newest first, filtered by author, persona and state."""
        query = select(Thread).where(Thread.workspace_id == workspace_id)
        if author_id is not None:
            query = query.where(Thread.owner_id == author_id)
        if persona_id is not None:
            query = query.where(Thread.persona_id == persona_id)
        if status is not None:
            query = query.where(Thread.status == status)
        async with self.db.read() as s:
            return list(await s.scalars(query.order_by(Thread.id.desc()).limit(limit)))
