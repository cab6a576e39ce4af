"""What one ``/post`` costs the commands layer and storage: statements, trips to aiosqlite's
connection thread, CPU — alone and N at once.

    python bench/post_cost.py [--users 50]

The real Conversation on SQLite with a gated fake engine (nothing renders), a Discord-style event
(a threaded platform: the job is held until the thread exists), every user with a ready persona in
one server's workspace. No front end: what is measured is ``Conversation.handle`` only.
"""

from __future__ import annotations

import sys
from pathlib import Path

_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import aiosqlite.core  # noqa: E402
from sqlalchemy import event  # noqa: E402

from bench.gated_app import gated_app, member_with_persona  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

COUNTS = {"statements": 0, "trips": 0}
_execute = aiosqlite.core.Connection._execute


async def _counted(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
    COUNTS["trips"] += 1
    return await _execute(self, fn, *args, **kwargs)


aiosqlite.core.Connection._execute = _counted  # type: ignore[method-assign]


async def measure(users: int, folder: Path) -> dict[str, Any]:
    from commands.events import Event, EventKind

    app, engine = await gated_app(folder)
    store = app.store
    workspace = await store.workspace("discord", "777", "Shop")
    for n in range(users + 1):
        await member_with_persona(store, workspace.id, str(1000 + n), f"u{n}", f"mia{n}")
    event.listen(
        store.db.engine.sync_engine,
        "before_cursor_execute",
        lambda *a: COUNTS.__setitem__("statements", COUNTS["statements"] + 1),
    )

    def post(n: int) -> Event:
        return Event(
            platform="discord",
            user_id=str(1000 + n),
            user_name=f"u{n}",
            kind=EventKind.COMMAND,
            command="post",
            options={"persona": f"mia{n}", "prompt": "a latte"},
            channel_id=5,
            workspace="777",
            workspace_name="Shop",
        )

    await app.conversation.handle(post(users))  # warm-up (statement caches, connections)
    COUNTS.update(statements=0, trips=0)
    started = time.perf_counter()
    await app.conversation.handle(post(users))
    alone = {"ms": round((time.perf_counter() - started) * 1000, 1), **COUNTS}
    COUNTS.update(statements=0, trips=0)
    done: list[float] = []
    cpu, started = time.process_time(), time.perf_counter()

    async def one(n: int) -> None:
        await app.conversation.handle(post(n))
        done.append(time.perf_counter() - started)

    await asyncio.gather(*(one(n) for n in range(users)))
    cpu = time.process_time() - cpu
    engine.release.set()
    await app.close()
    return {
        "alone": alone,
        "at_once": {
            "users": users,
            "p50_ms": round(statistics.median(done) * 1000, 1),
            "max_ms": round(max(done) * 1000, 1),
            "cpu_ms_per_post": round(cpu * 1000 / users, 1),
            "statements_per_post": COUNTS["statements"] / users,
            "trips_per_post": COUNTS["trips"] / users,
        },
        "load": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-post-") as tmp:
        print(json.dumps(asyncio.run(measure(args.users, Path(tmp))), indent=2))


if __name__ == "__main__":
    main()
