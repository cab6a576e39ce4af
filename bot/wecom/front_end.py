"""WeCom as a :class:`bot.frontend.FrontEnd`: the callback server on WECOM_HOST:WECOM_PORT.

:func:`create_wecom_app` is the aiohttp app (tests serve it on loopback); :class:`WeComFrontEnd`
serves it for ``persona-studio run``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from bot.frontend import FrontEndTasks, serve
from bot.wecom.envelope import MAX_BODY_BYTES
from bot.wecom.server import CALLBACK_PATH, ConversationLike, WeComBot
from bot.wecom.translate import PLATFORM
from commands.events import Action
from storage.settings import Settings

log = logging.getLogger(__name__)

WECOM_BOT: web.AppKey[WeComBot] = web.AppKey("wecom_bot", WeComBot)


def create_wecom_app(settings: Settings, conversation: ConversationLike, **options: Any) -> web.Application:
    """The callback server's aiohttp app. ``options`` go to :class:`WeComBot` (tests inject
    a session, redis client, rate limiter ...). The bot is ``app[WECOM_BOT]``; it starts and
    stops with the app."""
    bot = WeComBot(settings, conversation, **options)
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[WECOM_BOT] = bot
    app.router.add_get(CALLBACK_PATH, bot.handle_verify)
    app.router.add_post(CALLBACK_PATH, bot.handle_callback)

    async def lifecycle(_app: web.Application) -> Any:
        await bot.start()
        yield
        await bot.stop()

    app.cleanup_ctx.append(lifecycle)
    return app


class WeComFrontEnd:
    """The callback server of one self-built app, listening on WECOM_HOST:WECOM_PORT."""

    platform = PLATFORM

    def __init__(self, settings: Settings, conversation: ConversationLike, **options: Any) -> None:
        self.settings = settings
        self.app = create_wecom_app(settings, conversation, **options)
        self._runner = web.AppRunner(self.app, access_log=None)
        self._stopped = asyncio.Event()

    @property
    def bot(self) -> WeComBot:
        return self.app[WECOM_BOT]

    @property
    def tasks(self) -> FrontEndTasks:
        return self.bot.tasks

    async def start(self) -> None:
        await self._runner.setup()  # starts the bot: API client, deliverer, pending deliveries
        site = web.TCPSite(self._runner, self.settings.wecom_host, self.settings.wecom_port)
        try:
            await site.start()
        except BaseException:
            await self._runner.cleanup()
            raise
        log.info(
            "wecom: callback server on http://%s:%d%s",
            self.settings.wecom_host,
            self.settings.wecom_port,
            CALLBACK_PATH,
        )

    async def wait_closed(self) -> None:
        await self._stopped.wait()

    async def stop(self) -> None:
        try:
            await self._runner.cleanup()
        finally:
            self._stopped.set()

    async def deliver(self, actions: Sequence[Action]) -> None:
        await self.bot.deliver(actions)

    async def deliver_pending(self) -> int:
        return await self.bot.deliver_pending()


async def run_wecom(settings: Settings, conversation: ConversationLike) -> None:
    """Serve the callback on WECOM_HOST:WECOM_PORT until cancelled."""
    await serve(WeComFrontEnd(settings, conversation))
