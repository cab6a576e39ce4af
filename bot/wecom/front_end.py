"""WeCom as a :class:`bot.frontend.FrontEnd`: the callback server on WECOM_HOST:WECOM_PORT.

:func:`create_wecom_app` is the aiohttp app (tests serve it on loopback); :class:`WeComFrontEnd`
serves it for ``persona-studio run``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from bot.frontend import ConversationPort, FrontEndBase
from bot.wecom.config import WeComConfig
from bot.wecom.envelope import MAX_BODY_BYTES
from bot.wecom.server import CALLBACK_PATH, WeComBot
from bot.wecom.translate import PLATFORM
from commands.events import Action
from storage.inbox import Inbox

log = logging.getLogger(__name__)

WECOM_BOT: web.AppKey[WeComBot] = web.AppKey("wecom_bot", WeComBot)


def create_wecom_app(
    config: WeComConfig, conversation: ConversationPort, *, inbox: Inbox, **options: Any
) -> web.Application:
    """The callback server's aiohttp app. ``options`` go to :class:`WeComBot` (tests inject
    a session, redis client, rate limiter ...). The bot is ``app[WECOM_BOT]``; it starts and
    stops with the app."""
    bot = WeComBot(config, conversation, inbox=inbox, **options)
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


class WeComFrontEnd(FrontEndBase):
    """The callback server of one self-built app, listening on WECOM_HOST:WECOM_PORT."""

    platform = PLATFORM

    def __init__(self, config: WeComConfig, conversation: ConversationPort, *, inbox: Inbox, **options: Any) -> None:
        self.config = config
        self.app = create_wecom_app(config, conversation, inbox=inbox, **options)
        super().__init__(self.bot.tasks)
        self._runner = web.AppRunner(self.app, access_log=None)

    @property
    def bot(self) -> WeComBot:
        return self.app[WECOM_BOT]

    async def open(self) -> None:
        await self._runner.setup()  # starts the bot: API client, deliverer, pending deliveries
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        try:
            await site.start()
        except BaseException:
            await self._runner.cleanup()
            raise
        log.info("wecom: callback server on http://%s:%d%s", self.config.host, self.config.port, CALLBACK_PATH)

    async def close(self) -> None:
        await self._runner.cleanup()

    async def deliver(self, actions: Sequence[Action]) -> None:
        await self.bot.deliver(actions)

    async def deliver_pending(self) -> int:
        return await self.bot.deliver_pending()
