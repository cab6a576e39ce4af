"""``persona-studio run``: the configured front ends in one process.

Discord starts when DISCORD_TOKEN is set, the WeCom callback server when WECOM_CORP_ID is set.
With REDIS_URL unset the jobs run in this process (embedded worker); with it set, start
``persona-studio worker`` processes next to this one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from storage.settings import Settings, SettingsError

log = logging.getLogger(__name__)

WECOM_REQUIRED = ("wecom_agent_id", "wecom_secret", "wecom_token", "wecom_aes_key")


def check_front_end_settings(settings: Settings) -> list[str]:
    """Names of the front ends to start; SettingsError when one is half configured."""
    names = []
    if settings.discord_enabled:
        names.append("discord")
    if settings.wecom_enabled:
        missing = [name.upper() for name in WECOM_REQUIRED if getattr(settings, name) is None]
        if missing:
            raise SettingsError(
                f"setting {missing[0]}: needed because WECOM_CORP_ID is set (also missing: "
                f"{', '.join(missing[1:]) or 'nothing else'})"
            )
        names.append("wecom")
    return names


async def run_front_ends(settings: Settings) -> int:
    try:
        names = check_front_end_settings(settings)
    except SettingsError as exc:
        print(f"persona-studio run: {exc}")
        return 2
    if not names:
        print(
            "persona-studio run: no front end configured. Set DISCORD_TOKEN and/or WECOM_CORP_ID "
            "(see .env.example), or try `persona-studio chat`."
        )
        return 2
    from bot.app import build_app

    app = await build_app(settings)
    starters: dict[str, Callable[[], Awaitable[None]]] = {}
    if "discord" in names:
        from bot.discord_bot import run_discord

        starters["discord"] = lambda: run_discord(settings, app.conversation)
    if "wecom" in names:
        from bot.wecom import run_wecom

        starters["wecom"] = lambda: run_wecom(settings, app.conversation)
    queue = "arq via REDIS_URL (start `persona-studio worker`)" if settings.redis_url else "embedded worker"
    log.info("starting %s; jobs: %s", " + ".join(names), queue)
    tasks = [asyncio.create_task(start(), name=name) for name, start in starters.items()]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if task.exception() is not None:
                exc = task.exception()
                if isinstance(exc, SettingsError):
                    print(f"persona-studio run: {exc}")
                    return 2
                raise exc  # type: ignore[misc]
        return 0
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await app.close()
