"""200 concurrent writers (two processes, many tasks each) on one SQLite file: no lock errors."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from sqlalchemy import text

from storage.db import Database
from storage.repository import Store

ROOT = Path(__file__).resolve().parents[2]


async def test_two_hundred_concurrent_writers_never_hit_database_is_locked(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'busy.db'}"
    db = Database(url)
    await db.upgrade()
    store = Store(db)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    writer = [sys.executable, str(Path(__file__).with_name("sqlite_writer.py")), url]
    # two other processes with 70 writers each, and 60 writer tasks in this process
    procs = [
        await asyncio.create_subprocess_exec(*writer, name, "70", env=env, stderr=asyncio.subprocess.PIPE)
        for name in ("p1", "p2")
    ]
    owner = await store.user("console", "writer-local")
    errors: list[BaseException] = []

    async def write(index: int) -> None:
        try:
            await store.create_job(f"local-{index}", "edit", {}, user_id=owner.id, thread_id=None, platform="console")
            await store.set_progress(f"local-{index}", 0.5)
        except Exception as exc:
            errors.append(exc)

    await asyncio.gather(*(write(i) for i in range(60)))
    outputs = [await proc.communicate() for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], [err.decode()[-2000:] for _, err in outputs]
    assert errors == []
    async with db.session() as s:
        rows = (await s.execute(text("SELECT count(*), sum(progress) FROM jobs"))).one()
        journal = (await s.execute(text("PRAGMA journal_mode"))).scalar()
    assert rows[0] == 200 and rows[1] == 100.0
    assert journal == "wal"
    await db.dispose()
