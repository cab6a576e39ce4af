"""Fixtures: a fake Discord on loopback and PersonaBot started against it with any conversation.

``start_bot(conversation)`` returns a running :class:`PersonaBot` (READY, commands synced to the
fake's guild); every bot started is closed at teardown. Start it again with the same fake to
test a restart. The real ``commands.conversation.Conversation`` plugs in the same way as the
stand-in.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from bot.discord import DiscordConfig, PersonaBot
from storage.settings import load_settings
from tests.fakes.discord_server import FakeDiscord

StartBot = Callable[..., Awaitable[PersonaBot]]


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        with server.patch_discord_py():  # restores discord.py's globals afterwards
            yield server


@pytest.fixture
async def start_bot(fake: FakeDiscord) -> AsyncIterator[StartBot]:
    running: list[tuple[PersonaBot, asyncio.Task[None]]] = []

    async def start(conversation: Any, *, guild_sync: bool = True, **options: Any) -> PersonaBot:
        settings = load_settings(
            discord_token=fake.token,
            discord_api_base=fake.api_base,
            discord_guild_ids=[fake.guild_id] if guild_sync else [],
            discord_auto_archive_minutes=60,
        )
        options.setdefault("guild_ready_timeout", 0.05)
        options.setdefault("progress_interval", 0.2)
        bot = PersonaBot(conversation, DiscordConfig.from_settings(settings), **options)
        await bot.login(fake.token)
        task = asyncio.create_task(bot.connect())
        running.append((bot, task))
        await asyncio.wait_for(bot.wait_until_ready(), 10)
        return bot

    yield start
    for bot, task in running:
        await bot.close()
        try:
            await asyncio.wait_for(task, 10)
        except Exception:  # a test that closed the bot itself already saw the outcome
            pass
