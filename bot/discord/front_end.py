"""Discord as a :class:`bot.frontend.FrontEnd`: log in, hold the gateway connection, stop.

:class:`PersonaBot` is a :class:`discord.Client`, whose own ``start(token)`` runs until the
connection ends; this wraps it in the start/stop every front end has, so ``persona-studio run``
starts Discord like any other platform.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import discord

from bot.discord.client import PersonaBot
from bot.discord.config import DiscordConfig
from bot.discord.translate import PLATFORM
from bot.frontend import ConversationPort, FrontEndBase, serve
from commands.events import Action
from storage.settings import Settings, SettingsError

log = logging.getLogger(__name__)


class DiscordFrontEnd(FrontEndBase):
    """The Discord bot of one application token."""

    platform = PLATFORM

    def __init__(self, config: DiscordConfig, conversation: ConversationPort, **client_options: Any) -> None:
        self.config = config
        self.client = PersonaBot(conversation, config, **client_options)  # falls back if the intent is refused
        super().__init__(self.client.tasks)
        self._connection: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Log in (commands are synced and buttons registered then) and connect in the background."""
        token = self.config.require_token()
        try:
            await self.client.login(token)
        except discord.LoginFailure:
            await self.client.close()
            raise SettingsError(
                "setting DISCORD_TOKEN: Discord refused the token (reset it in the Developer Portal)"
            ) from None
        except BaseException:
            await self.client.close()
            raise
        self._connection = asyncio.create_task(self.client.connect(), name="discord-gateway")

    async def wait_closed(self) -> None:
        """Returns when the gateway connection ended (re-raises what ended it)."""
        if self._connection is not None:
            await asyncio.shield(self._connection)

    async def close(self) -> None:
        if not self.client.is_closed():
            await self.client.close()
        if self._connection is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._connection, 10)

    async def deliver(self, actions: Sequence[Action]) -> None:
        await self.client.deliver(actions)

    async def deliver_pending(self) -> int:
        return await self.client.deliver_pending()


async def run_discord(settings: Settings, conversation: ConversationPort) -> None:
    """Run the Discord front end until cancelled."""
    await serve(DiscordFrontEnd(DiscordConfig.from_settings(settings), conversation))
