"""Migrations from empty to head on both databases, and the head matches the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from storage.db import Database
from storage.models import Base

HEAD = "0008"


async def test_upgrade_step_by_step_keeps_data(tmp_path) -> None:
    """0001 -> head on a database holding a job (the batch-mode ALTER path of SQLite)."""
    from sqlalchemy import text

    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'steps.db'}")
    try:
        await db.upgrade("0001")
        async with db.session() as s:
            await s.execute(
                text(
                    "INSERT INTO jobs (id, kind, status, progress, spec, platform, attempts, delivered, created_at)"
                    " VALUES ('j1', 'edit', 'done', 1.0, '{}', 'console', 1, 0, CURRENT_TIMESTAMP)"
                )
            )
        await db.upgrade()
        assert await db.current_revision() == HEAD
        async with db.session() as s:
            row = (await s.execute(text("SELECT id, delivery_started_at FROM jobs"))).one()
        assert tuple(row) == ("j1", None)
    finally:
        await db.dispose()


async def test_upgrade_from_empty_to_head_matches_models(database_url: str) -> None:
    db = Database(database_url)
    try:
        assert await db.current_revision() is None
        await db.upgrade()
        assert await db.current_revision() == HEAD
        await db.upgrade()  # idempotent: running it again on start is harmless
        async with db.engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            diff = await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata))
        assert {"users", "personas", "threads", "turns", "jobs"} <= tables
        # what autogenerate would still want to change: nothing but index/constraint naming noise
        significant = [d for d in diff if d[0] not in ("add_index", "remove_index")]
        assert significant == [], significant
    finally:
        await db.dispose()


async def test_0003_keys_existing_persona_names_and_renames_collisions(database_url: str) -> None:
    """Live personas that collide under NFKC + casefold (``Mia``/``mia``) both survive 0002 -> 0003."""
    from sqlalchemy import text

    db = Database(database_url)
    try:
        await db.upgrade("0002")
        async with db.session() as s:
            await s.execute(
                text(
                    "INSERT INTO users (id, platform, platform_user_id, display_name, settings,"
                    " created_at) VALUES (1, 'console', 'me', '', '{}', CURRENT_TIMESTAMP)"
                )
            )
            for pid, name in ((1, "Mia"), (2, "mia"), (3, "Élodie")):
                await s.execute(
                    text(
                        "INSERT INTO personas (id, owner_id, name, archetype, lora_mix, seed, status, created_at)"
                        " VALUES (:id, 1, :name, 'sweet', '[]', 1, 'ready', CURRENT_TIMESTAMP)"
                    ),
                    {"id": pid, "name": name},
                )
        await db.upgrade()
        async with db.session() as s:
            rows = (await s.execute(text("SELECT name, name_key FROM personas ORDER BY id"))).all()
        assert [tuple(r) for r in rows] == [("Mia", "mia"), ("mia-2", "mia-2"), ("Élodie", "élodie")]
    finally:
        await db.dispose()
