"""Benchmark a Discord burst: N users each send ``/post`` at once, with ~430 jobs unfinished.

    python bench/discord_burst.py [--users 50] [--backlog 430] [--profile 25]

Everything runs in this process, as in the tests: the real discord.py client (PersonaBot) against
the fake Discord (tests.fakes.discord_server), the real Conversation on SQLite, the embedded queue
with a gated fake engine (every job waits: the backlog stays unfinished). Per command: the
acknowledgement (interaction callback) and the visible answer (the "📸 Post #N" edit of the
thinking message), both from the interaction's dispatch; and the CPU time of this process over the
burst per command (bot, fake Discord and database threads together: less sensitive than the times
to a shared host's load). ``--profile N`` prints the N functions of
this project (and the libraries under them) with the most cumulative time during the burst.
"""

from __future__ import annotations

import sys
from pathlib import Path

_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import cProfile  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import pstats  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from typing import Any  # noqa: E402

from sqlalchemy import event  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.gated_app import gated_app, member_with_persona  # noqa: E402
from bench.stats import ms_summary  # noqa: E402


async def burst(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    from bot.discord import DiscordConfig, PersonaBot
    from bot.frontend import freeze_start_up_heap
    from storage.inbox import Inbox
    from storage.settings import load_settings
    from tests.fakes.discord_server import FakeDiscord

    async with FakeDiscord() as fake:
        with fake.patch_discord_py():
            app, engine = await gated_app(folder)  # nothing finishes
            users = [fake.add_user(f"user{n}") for n in range(args.users)]
            for user in users:
                fake.add_member(fake.guild_id, user)
            store = app.store
            backlog_owner = await store.user("discord", "backlog", "Backlog")
            for i in range(args.backlog):
                await store.create_job(
                    f"b{i}", "edit", {"i": i}, user_id=backlog_owner.id, thread_id=None, platform="discord"
                )
            # the personas live in the server's workspace (names are unique there: one each)
            # users who have used the bot before: their names and the server's are known (a first
            # command of a new user or server also writes its name)
            guild = fake.guilds[fake.guild_id]
            workspace = await store.workspace("discord", str(fake.guild_id), guild["name"])
            for n, user in enumerate(users):
                name = user.get("global_name") or user["username"]
                await member_with_persona(store, workspace.id, str(user["id"]), name, f"mia{n}")
            statements: Counter[str] = Counter()
            counting = False

            def count(_c: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
                if counting:
                    statements[statement.split(None, 1)[0].upper()] += 1

            event.listen(store.db.engine.sync_engine, "before_cursor_execute", count)
            config = DiscordConfig.from_settings(
                load_settings(
                    discord_token=fake.token, discord_api_base=fake.api_base, discord_guild_ids=[fake.guild_id]
                )
            )
            # as serve() builds it: every command is stored in the inbox before its defer
            bot = PersonaBot(app.conversation, config, inbox=Inbox(app.db), guild_ready_timeout=0.05)
            await bot.login(fake.token)
            connection = asyncio.create_task(bot.connect())
            await asyncio.wait_for(bot.wait_until_ready(), 30)
            freeze_start_up_heap()  # as serve() does once the front ends are up
            profiler = cProfile.Profile() if args.profile else None
            try:
                payloads = [
                    fake.slash_command("post", {"persona": f"mia{n}", "prompt": f"a latte, take {n}"}, user=user)
                    for n, user in enumerate(users)
                ]
                mark = fake.mark()
                counting = True
                cpu_start = time.process_time()
                if profiler is not None:
                    profiler.enable()
                burst_start = time.perf_counter()
                interactions = await asyncio.gather(*(fake.send_interaction(p) for p in payloads))
                tokens = {i.token: i for i in interactions}
                await fake.wait_until(
                    lambda: (
                        len({r.vars.get("token") for r in fake.requests_for("webhook_edit", mark)} & tokens.keys())
                        >= len(tokens)
                    ),
                    timeout_s=120,
                )
                cpu_s = time.process_time() - cpu_start  # this process: bot, fake Discord, database threads
                if profiler is not None:
                    profiler.disable()
                answered_statements = dict(statements)
                # the follow-up after each answer: the post's thread, its binding, the job released
                await fake.wait_until(
                    lambda: len(fake.requests_for("create_thread_from_message", mark)) >= len(tokens), timeout_s=120
                )
                await _until_no_job_held(store)
                follow_up_s = time.perf_counter() - burst_start
                follow_cpu_s = time.process_time() - cpu_start
                counting = False
                acks = [i.ack_delay or 0.0 for i in interactions]
                visible: dict[str, float] = {}
                for request in fake.requests_for("webhook_edit", mark):
                    token = request.vars.get("token", "")
                    content = (request.json or {}).get("content") or ""
                    if token in tokens and token not in visible and content.startswith("📸"):
                        visible[token] = request.at - tokens[token].created_at
            finally:
                engine.release.set()
                await app.close()  # the queue and its deliveries first, while the client still answers them
                await bot.close()
                connection.cancel()
    stats = io.StringIO()
    if profiler is not None:
        table = pstats.Stats(profiler, stream=stats).sort_stats(args.sort)
        table.print_stats(args.profile)
        stats.write(_by_area(table))
    return {
        "users": args.users,
        "backlog": args.backlog,
        "ack": ms_summary(acks),
        "visible_answer": ms_summary(list(visible.values())),
        "answered": len(visible),
        "cpu_ms_per_command": round(cpu_s * 1000 / max(1, args.users), 1),
        "statements_per_command": {k: round(v / max(1, args.users), 2) for k, v in answered_statements.items()},
        "threads_done_s": round(follow_up_s, 2),
        "cpu_ms_per_command_with_follow_up": round(follow_cpu_s * 1000 / max(1, args.users), 1),
        "load": [round(x, 2) for x in os.getloadavg()],
        "profile": stats.getvalue() if args.profile else "",
    }


async def _until_no_job_held(store: Any, within_s: float = 120) -> None:
    """Poll (a bench, not a test) until every post's job left ``held`` (its thread is bound)."""
    from sqlalchemy import func, select

    from storage.models import Job, JobStatus

    deadline = time.perf_counter() + within_s
    while time.perf_counter() < deadline:
        async with store.db.session() as s:
            if not await s.scalar(select(func.count()).where(Job.status == JobStatus.HELD)):
                return
        await asyncio.sleep(0.01)
    raise TimeoutError("jobs still held")


def _by_area(table: pstats.Stats) -> str:
    """CPU time (tottime) summed by where the code lives: this project's layers, the fake Discord,
    discord.py, aiohttp, SQLAlchemy and the database driver, the rest."""
    areas = {
        "commands/": "commands",
        "storage/": "storage",
        "bot/": "bot",
        "tests/fakes/": "fake Discord (the test server)",
        "/discord/": "discord.py",
        "/aiohttp/": "aiohttp",
        "/sqlalchemy/": "sqlalchemy",
        "/aiosqlite/": "aiosqlite",
        "sqlite3": "sqlite3",
    }
    sums: dict[str, float] = {}
    for (filename, _, _), (_, _, tottime, _, _) in table.stats.items():  # type: ignore[attr-defined]
        area = next((name for key, name in areas.items() if key in filename), "other (asyncio, json, ...)")
        sums[area] = sums.get(area, 0.0) + tottime
    total = sum(sums.values()) or 1.0
    lines = [
        f"{name:<32} {seconds:6.2f} s  {seconds / total:5.1%}"
        for name, seconds in sorted(sums.items(), key=lambda kv: -kv[1])
    ]
    return "\nCPU by area (tottime):\n" + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--backlog", type=int, default=430)
    parser.add_argument("--profile", type=int, default=0, help="print the N most expensive functions")
    parser.add_argument("--sort", default="tottime", help="profile order: tottime (CPU in the function) or cumulative")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-discord-") as tmp:
        result = asyncio.run(burst(args, Path(tmp)))
    profile = result.pop("profile")
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    if profile:
        print(profile)


if __name__ == "__main__":
    main()
