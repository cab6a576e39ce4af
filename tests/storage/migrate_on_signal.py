"""A process that migrates a database when told: it loads everything, prints ``ready``, waits for
a line on stdin and then runs ``Database.upgrade()`` as a starting worker does; exit status 0 and
the head revision on stdout when it came up."""

from __future__ import annotations

import asyncio
import sys

from storage.db import Database


async def main(url: str) -> int:
    db = Database(url)
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    try:
        await db.upgrade()
        print(await db.current_revision(), flush=True)
    finally:
        await db.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1])))
