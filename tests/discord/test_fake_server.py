"""The fake Discord is faithful enough for the real discord.py client: connect, cache, send."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator

import discord
import pytest

from tests.fakes.discord_server import INTENT_MESSAGE_CONTENT, FakeDiscord


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        with server.patch_discord_py():
            yield server


async def _start(client: discord.Client, token: str) -> asyncio.Task[None]:
    """Log in, connect in the background and wait for on_ready."""
    await client.login(token)
    task = asyncio.create_task(client.connect())
    await asyncio.wait_for(client.wait_until_ready(), 10)
    return task


async def _stop(client: discord.Client, task: asyncio.Task[None]) -> None:
    await client.close()
    await asyncio.wait_for(task, 10)


async def test_client_connects_and_sends(fake: FakeDiscord) -> None:
    ready = asyncio.Event()
    received: list[discord.Message] = []
    got_message = asyncio.Event()
    intents = discord.Intents.default()
    intents.message_content = True
    client = discord.Client(intents=intents, guild_ready_timeout=0.05)

    @client.event
    async def on_ready() -> None:
        ready.set()

    @client.event
    async def on_message(message: discord.Message) -> None:
        received.append(message)
        got_message.set()

    task = await _start(client, fake.token)
    try:
        await asyncio.wait_for(ready.wait(), 10)
        assert client.user is not None and client.user.id == fake.application_id
        guild = client.get_guild(fake.guild_id)
        assert guild is not None and guild.name == "Persona Test Guild"
        channel = guild.get_channel(fake.channel_id)
        assert isinstance(channel, discord.TextChannel)
        assert guild.me is not None and guild.member_count == 3

        mark = fake.mark()
        sent = await channel.send("hello", file=discord.File(io.BytesIO(b"abc"), filename="a.txt"))
        request = await fake.wait_request(route="create_message", since=mark)
        assert request.json["content"] == "hello"
        assert [f.data for f in request.files] == [b"abc"]
        assert sent.id in fake.messages and sent.attachments[0].filename == "a.txt"
        # The bot's own message comes back over the gateway, as from Discord.
        await asyncio.wait_for(got_message.wait(), 5)
        assert received[0].id == sent.id

        thread = await channel.create_thread(name="a thread", message=sent, auto_archive_duration=60)
        assert thread.id == sent.id and thread.parent_id == channel.id
        await fake.wait_until(lambda: client.get_channel(thread.id) is not None, 5)

        await sent.add_reaction("✅")
        assert fake.reaction_users(sent.id, "✅") == [fake.application_id]
        edited = await sent.edit(content="edited")
        assert edited.content == "edited" and fake.messages[sent.id]["content"] == "edited"
    finally:
        await _stop(client, task)


async def test_unknown_route_is_404_and_recorded(fake: FakeDiscord) -> None:
    client = discord.Client(intents=discord.Intents.default(), guild_ready_timeout=0.05)
    await client.login(fake.token)
    try:
        with pytest.raises(discord.NotFound):
            await client.fetch_sticker(123)
        assert fake.requests[-1].route == "unknown" and fake.requests[-1].status == 404
    finally:
        await client.close()


async def test_bad_token_is_refused(fake: FakeDiscord) -> None:
    client = discord.Client(intents=discord.Intents.default())
    with pytest.raises(discord.LoginFailure):
        await client.login("wrong-token")
    await client.close()


async def test_message_content_intent_not_allowed_closes_4014() -> None:
    async with FakeDiscord(message_content_allowed=False) as server:
        with server.patch_discord_py():
            intents = discord.Intents.default()
            intents.message_content = True
            client = discord.Client(intents=intents)
            with pytest.raises(discord.PrivilegedIntentsRequired):
                await asyncio.wait_for(client.start(server.token), 10)
            await client.close()
            assert server.gateway_closes == [4014]


async def test_message_content_is_blank_without_the_intent(fake: FakeDiscord) -> None:
    seen: list[discord.Message] = []
    arrived = asyncio.Event()
    client = discord.Client(intents=discord.Intents.default(), guild_ready_timeout=0.05)

    @client.event
    async def on_message(message: discord.Message) -> None:
        seen.append(message)
        if len(seen) == 2:
            arrived.set()

    task = await _start(client, fake.token)
    try:
        await fake.user_message(fake.channel_id, "secret words")
        await fake.user_message(fake.channel_id, f"<@{fake.application_id}> hi bot")
        await asyncio.wait_for(arrived.wait(), 5)
        assert seen[0].content == ""
        assert seen[1].content.endswith("hi bot")
        assert not client.intents.message_content and INTENT_MESSAGE_CONTENT
    finally:
        await _stop(client, task)


async def test_interaction_ack_deadline_and_double_ack(fake: FakeDiscord) -> None:
    client = discord.Client(intents=discord.Intents.default(), guild_ready_timeout=0.05)
    tree = discord.app_commands.CommandTree(client)
    acked = asyncio.Event()
    second: list[Exception] = []

    @tree.command(name="ping", description="ping")
    async def ping(interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True)
        try:
            await interaction.response.defer()
        except discord.InteractionResponded as exc:  # discord.py guards it client-side
            second.append(exc)
        await interaction.followup.send("pong")
        acked.set()

    task = await _start(client, fake.token)
    try:
        await tree.sync()
        interaction = await fake.send_interaction(fake.slash_command("ping"))
        callback = await fake.wait_callback(interaction)
        assert callback.json == {"type": 5}
        await asyncio.wait_for(acked.wait(), 5)
        original = fake.messages[interaction.original_message_id or 0]
        assert original["content"] == "pong" and original["flags"] == 0  # the followup filled the thinking message
        assert second and interaction.ack_delay is not None and interaction.ack_delay < 3
    finally:
        await _stop(client, task)
