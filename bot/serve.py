"""``persona-studio run``: the configured front ends in one process; ``persona-studio web``: the
web studio alone.

Discord starts when DISCORD_TOKEN is set, the WeCom callback server when WECOM_CORP_ID is set;
the web studio (bot/web) always starts beside them, on WEB_HOST:WEB_PORT.
With REDIS_URL unset the jobs run in this process (embedded worker); with it set, start
``persona-studio worker`` processes next to this one.
"""

from __future__ import annotations

import logging

from bot.frontend import FrontEnd, serve
from storage.settings import Settings, SettingsError
from storage.workspace_keys import configured_homes

log = logging.getLogger(__name__)


def check_front_end_settings(settings: Settings) -> list[str]:
    """Names of the front ends to start; SettingsError when one is half configured."""
    names = []
    if settings.discord_enabled:
        names.append("discord")
    if settings.wecom_enabled:
        from bot.wecom.config import WeComConfig

        WeComConfig.from_settings(settings)  # raises when a required setting is missing
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
    front_ends: list[FrontEnd] = []
    try:
        if "discord" in names:
            from bot.discord import DiscordConfig, DiscordFrontEnd
            from storage.inbox import Inbox as DiscordInbox

            # slash commands are stored before their defer: a restart answers them (bot.discord.pending)
            discord = DiscordConfig.from_settings(settings)
            front_ends.append(DiscordFrontEnd(discord, app.conversation, inbox=DiscordInbox(app.db)))
        if "wecom" in names:
            from bot.wecom import WeComConfig, WeComFrontEnd
            from bot.wecom.outbox import inbox_owner
            from storage.inbox import Inbox

            wecom = WeComConfig.from_settings(settings)
            inbox = Inbox(app.db, owner=inbox_owner(wecom.port))  # rows of a dead peer are taken over
            front_ends.append(WeComFrontEnd(wecom, app.conversation, inbox=inbox))
        from bot.web import WebConfig, WebFrontEnd, make_state

        web_config = WebConfig.from_settings(settings)
        web = WebFrontEnd(
            web_config, make_state(web_config, app.store, app.blobs, app.conversation.queue, app.conversation)
        )
        front_ends.insert(0, web)  # first: it is up (health checks answer) before the chat front ends
        queue = "arq via REDIS_URL (start `persona-studio worker`)" if settings.redis_url else "embedded worker"
        log.info("starting %s; jobs: %s", " + ".join(names), queue)
        await serve(*front_ends)
        return 0
    except SettingsError as exc:
        print(f"persona-studio run: {exc}")
        return 2
    finally:
        await app.close()


async def run_web(settings: Settings) -> int:
    """The web studio alone: pages, health and metrics; cancels go through arq when REDIS_URL is
    set (without it, the jobs run inside ``persona-studio run``, and a cancel is recorded in
    storage)."""
    from bot.web import WebConfig, WebFrontEnd, make_state
    from engine.jobs.queue import ArqQueue
    from storage.blobs import open_blob_store
    from storage.db import Database
    from storage.repository import Store

    db = Database(settings.database_url)
    try:
        await db.upgrade(home_workspaces=configured_homes(settings.wecom_corp_id, settings.discord_guild_ids))
        store = Store(db)
        queue = ArqQueue(settings.redis_url, store) if settings.redis_url else None  # connects on first use
        try:
            config = WebConfig.from_settings(settings)
            await serve(WebFrontEnd(config, make_state(config, store, open_blob_store(settings), queue)))
        finally:
            if queue is not None:
                await queue.close()
        return 0
    except SettingsError as exc:
        print(f"persona-studio web: {exc}")
        return 2
    finally:
        await db.dispose()
