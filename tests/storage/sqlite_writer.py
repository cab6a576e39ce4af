"""A writer process for the SQLite concurrency test: N tasks, each one job row + a progress update
+ a read back."""

from __future__ import annotations

import asyncio
import sys

from storage.db import Database
from storage.repository import Store


async def main(url: str, prefix: str, count: int) -> int:
    store = Store(Database(url))
    owner = await store.user("console", f"writer-{prefix}")
    errors = 0

    async def write(index: int) -> None:
        nonlocal errors
        try:
            job_id = f"{prefix}-{index}"
            await store.create_job(job_id, "edit", {"i": index}, user_id=owner.id, thread_id=None, platform="console")
            await store.set_progress(job_id, 0.5)
            read = await store.get_job(job_id)  # reads in between: deferred, never "locked"
            if read is None or read.progress != 0.5:
                raise AssertionError(f"read back {read!r}")
        except Exception as exc:  # count every failure, "database is locked" included
            errors += 1
            print(f"ERROR {type(exc).__name__}: {exc}", file=sys.stderr)

    await asyncio.gather(*(write(i) for i in range(count)))
    await store.db.dispose()
    return errors


if __name__ == "__main__":
    url, prefix, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sys.exit(min(asyncio.run(main(url, prefix, count)), 100))
