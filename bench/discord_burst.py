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
from typing import Any  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.gated_app import gated_app, member_with_persona  # noqa: E402
from bench.stats import ms_summary  # noqa: E402


async def burst(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    from bot.discord import DiscordConfig, PersonaBot
    from bot.frontend import freeze_start_up_heap
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
            workspace = await store.workspace("discord", str(fake.guild_id))
            for n, user in enumerate(users):
                await member_with_persona(store, workspace.id, str(user["id"]), user["username"], f"mia{n}")
            config = DiscordConfig.from_settings(
                load_settings(
                    discord_token=fake.token, discord_api_base=fake.api_base, discord_guild_ids=[fake.guild_id]
                )
            )
            bot = PersonaBot(app.conversation, config, guild_ready_timeout=0.05)
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
                cpu_start = time.process_time()
                if profiler is not None:
                    profiler.enable()
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
                acks = [i.ack_delay or 0.0 for i in interactions]
                visible: dict[str, float] = {}
                for request in fake.requests_for("webhook_edit", mark):
                    token = request.vars.get("token", "")
                    content = (request.json or {}).get("content") or ""
                    if token in tokens and token not in visible and content.startswith("📸"):
                        visible[token] = request.at - tokens[token].created_at
            finally:
                engine.release.set()
                await bot.close()
                connection.cancel()
                await app.close()
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
        "profile": stats.getvalue() if args.profile else "",
    }


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
