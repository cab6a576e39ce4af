"""storage.sqlite_driver: SQLite statements in one trip to aiosqlite's connection thread, with the
same results as SQLAlchemy's own aiosqlite adapter (rows, row counts, inserted ids, errors)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiosqlite.core
import pytest
from sqlalchemy import insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine

from storage.db import Database
from storage.models import User


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The functions aiosqlite runs in its connection thread, in order."""
    seen: list[str] = []
    original = aiosqlite.core.Connection._execute

    async def counted(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(getattr(fn, "__name__", repr(fn)))
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.core.Connection, "_execute", counted)
    return seen


async def _exercise(engine: Any) -> dict[str, Any]:
    """The same statements through ``engine``: what each gave back."""
    out: dict[str, Any] = {}
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE, n INTEGER)"))
        first = await conn.execute(text("INSERT INTO t (name, n) VALUES ('a', 1)"))
        out["lastrowid"] = first.lastrowid
        await conn.execute(
            text("INSERT INTO t (name, n) VALUES (:name, :n)"), [{"name": f"x{i}", "n": i} for i in range(5)]
        )
        changed = await conn.execute(text("UPDATE t SET n = n + 10 WHERE n < 3"))
        out["rowcount"] = changed.rowcount
        out["rows"] = [tuple(r) for r in await conn.execute(text("SELECT name, n FROM t ORDER BY id"))]
        out["scalar"] = await conn.scalar(text("SELECT count(*) FROM t"))
        out["empty"] = (await conn.execute(text("SELECT name FROM t WHERE n > 1000"))).all()
    try:
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO t (name, n) VALUES ('a', 9)"))
    except IntegrityError as exc:
        out["error"] = type(exc.orig).__name__
    async with engine.connect() as conn:
        out["after_error"] = await conn.scalar(text("SELECT count(*) FROM t WHERE name = 'a'"))
    return out


async def test_results_match_the_plain_aiosqlite_adapter(tmp_path: Path) -> None:
    plain = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'plain.db'}")
    one_trip = create_async_engine(f"sqlite+aiosqlite_onetrip:///{tmp_path / 'onetrip.db'}")
    try:
        expected, got = await _exercise(plain), await _exercise(one_trip)
    finally:
        await plain.dispose()
        await one_trip.dispose()
    assert got == expected
    assert got["rowcount"] == 4 and got["lastrowid"] == 1 and got["error"] == "IntegrityError"
    assert got["scalar"] == 6 and got["after_error"] == 1 and got["empty"] == []


async def test_a_select_is_one_trip_and_a_write_session_three(tmp_path: Path, trips: list[str]) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    await db.upgrade()
    assert db.engine.dialect.driver == "aiosqlite" and type(db.engine.dialect).__name__ == "OneTripDialect"
    async with db.read() as s:
        await s.scalar(select(User).where(User.platform == "x"))  # connects on first use
    trips.clear()
    async with db.read() as s:
        assert await s.scalar(select(User).where(User.platform == "x")) is None
    assert trips == ["_run", "rollback"]  # the SELECT, and the session's end (no BEGIN: autocommit)
    trips.clear()
    async with db.session() as s:
        await s.execute(insert(User).values(platform="x", platform_user_id="1", display_name="a", settings={}))
        await s.execute(update(User).where(User.platform == "x").values(display_name="b"))
    assert trips == ["_run", "_run", "_run", "commit"]  # BEGIN IMMEDIATE, INSERT, UPDATE, COMMIT
    async with db.read() as s:
        assert await s.scalar(select(User.display_name).where(User.platform == "x")) == "b"
    await db.dispose()
