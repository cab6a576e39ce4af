"""Migrations from empty to head on both databases, and the head matches the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from storage.db import Database
from storage.models import Base


async def test_upgrade_from_empty_to_head_matches_models(database_url: str) -> None:
    db = Database(database_url)
    try:
        assert await db.current_revision() is None
        await db.upgrade()
        assert await db.current_revision() == "0001"
        await db.upgrade()  # idempotent: running it again on start is harmless
        async with db.engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            diff = await conn.run_sync(
                lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata)
            )
        assert {"users", "personas", "threads", "turns", "jobs"} <= tables
        # what autogenerate would still want to change: nothing but index/constraint naming noise
        significant = [d for d in diff if d[0] not in ("add_index", "remove_index")]
        assert significant == [], significant
    finally:
        await db.dispose()
