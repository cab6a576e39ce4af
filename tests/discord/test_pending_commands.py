"""Issue 20 item 4: a slash command is stored before it is deferred; a process killed between the
defer and the answer leaves it in the inbox, and the next start answers it while its token is
valid (the "thinking…" message is edited: late, not never). An expired one is dropped. A button
click is acknowledged too (a deferred update), so it is stored and handled on start the same way."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from bot.discord import pending
from commands.events import Button, Event, Images, Reply
from storage.db import Database
from storage.inbox import Inbox
from storage.models import InboxItem, InboxState
from tests.discord.conftest import StartBot
from tests.discord.helpers import image_out, png_bytes
from tests.discord.standin import StandInConversation
from tests.discord.test_discord_bot import where_for
from tests.fakes.discord_server import CALLBACK_DEFERRED_CHANNEL_MESSAGE, CALLBACK_DEFERRED_UPDATE_MESSAGE, FakeDiscord


async def _rows(db: Database) -> list[InboxItem]:
    async with db.read() as s:
        return list(await s.scalars(select(InboxItem).order_by(InboxItem.id)))


async def test_a_command_left_by_a_killed_process_is_answered_on_start(
    fake: FakeDiscord, start_bot: StartBot, tmp_path: Path
) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    await db.upgrade()
    try:
        stuck = StandInConversation()  # the first process: handling never ends (it is "killed")
        stuck.gate = asyncio.Event()
        first = await start_bot(stuck, inbox=Inbox(db))
        interaction = await fake.send_interaction(fake.slash_command("status"))
        callback = await fake.wait_callback(interaction)
        assert callback.json["type"] == CALLBACK_DEFERRED_CHANNEL_MESSAGE
        await stuck.wait_events(1)
        (row,) = await _rows(db)
        assert row.state == InboxState.PENDING and row.payload["command"] == "status"
        await first.close()  # gone before answering: the user sees "thinking…"
        assert not fake.requests_for("webhook_edit")

        def answer(event: Event) -> list[Reply]:
            return [Reply(where=where_for(fake), text=f"{event.command}: all good (answered late)")]

        again = StandInConversation(answer)
        second = await start_bot(again, inbox=Inbox(db))
        await fake.wait_until(lambda: fake.requests_for("webhook_edit"))
        assert fake.messages[interaction.original_message_id or 0]["content"] == "status: all good (answered late)"
        assert [e.command for e in again.events] == ["status"]
        assert again.events[0].user_id == str(interaction.payload["member"]["user"]["id"])
        await second.tasks.drain()  # the start's answering of stored commands has finished
        assert [r.state for r in await _rows(db)] == [InboxState.DONE]
    finally:
        stuck.gate.set()
        await db.dispose()


async def test_an_expired_command_is_dropped(fake: FakeDiscord, start_bot: StartBot, tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    await db.upgrade()
    try:
        inbox = Inbox(db)
        await inbox.accept(
            "discord:0",
            "interaction:1",
            {"command": "status", "created_at": (datetime.now(UTC) - timedelta(minutes=20)).isoformat()},
        )
        async with db.session() as s:  # the application id the fake gives the bot
            await s.execute(update(InboxItem).values(platform=f"discord:{fake.application_id}"))
        conversation = StandInConversation()
        bot = await start_bot(conversation, inbox=inbox)
        await fake.wait_until(lambda: bot._delivered_pending)  # on_ready ran: its start-up work is spawned
        await bot.tasks.drain()
        assert [r.state for r in await _rows(db)] == [InboxState.DONE]
        assert conversation.events == [] and not fake.requests_for("webhook_edit")
    finally:
        await db.dispose()


async def test_the_start_up_sweep_leaves_commands_this_process_is_answering(
    fake: FakeDiscord, start_bot: StartBot, tmp_path: Path
) -> None:
    """The sweep of stored commands runs once the gateway is ready, and commands arrive from that
    moment on: one stored by this process and still being handled is not answered a second time
    (a second post, a second job) by the sweep."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    await db.upgrade()
    conversation = StandInConversation(lambda event: [Reply(where=where_for(fake), text=f"{event.command}: ok")])
    conversation.gate = asyncio.Event()  # the command is being handled while the sweep runs
    try:
        bot = await start_bot(conversation, inbox=Inbox(db))
        await fake.wait_until(lambda: bot._delivered_pending)
        await bot.tasks.drain()  # the start's own sweep found nothing
        interaction = await fake.send_interaction(fake.slash_command("status"))
        await conversation.wait_events(1)
        (row,) = await _rows(db)
        assert row.state == InboxState.PENDING  # stored, in hand
        # a sweep that comes now neither answers it again nor waits for it
        assert await asyncio.wait_for(bot.answer_pending_commands(), 10) == 0
        conversation.gate.set()
        await fake.wait_until(lambda: fake.requests_for("webhook_edit"))
        await bot.tasks.drain()
        assert [e.command for e in conversation.events] == ["status"]
        assert len(fake.requests_for("interaction_callback")) == 1
        assert fake.messages[interaction.original_message_id or 0]["content"] == "status: ok"
    finally:
        conversation.gate.set()
        await db.dispose()


async def _result_with(
    fake: FakeDiscord, conversation: StandInConversation, tmp_path: Path, *, turn_id: int, button: Button
) -> int:
    """A result message with ``button`` under it, delivered by the bot: its message id."""
    mark = fake.mark()
    where = where_for(fake, channel_id=fake.channel_id)
    images = (image_out(tmp_path, "r.png", png_bytes()),)
    await conversation.deliverers["discord"]([Images(where=where, turn_id=turn_id, buttons=(button,), images=images)])
    sent = await fake.wait_request(lambda r: bool(r.files), route="create_message", since=mark)
    return int(sent.response["id"])


async def test_a_button_click_left_by_a_killed_process_is_handled_on_start(
    fake: FakeDiscord, start_bot: StartBot, tmp_path: Path
) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    await db.upgrade()
    stuck = StandInConversation()  # the first process: handling never ends (it is "killed")
    stuck.gate = asyncio.Event()
    try:
        first = await start_bot(stuck, inbox=Inbox(db))
        result_id = await _result_with(fake, stuck, tmp_path, turn_id=31, button=Button.APPROVE)
        click = await fake.send_interaction(fake.component_click(result_id, "persona:approve:31"))
        assert (await fake.wait_callback(click)).json["type"] == CALLBACK_DEFERRED_UPDATE_MESSAGE
        await stuck.wait_events(1)
        (row,) = await _rows(db)
        assert row.state == InboxState.PENDING
        assert (row.payload["click"], row.payload["args"]) == ("result", {"action": "approve", "turn_id": 31})
        await first.close()  # gone before handling it: the approval was acknowledged, then lost
        assert not fake.requests_for("followup")

        def answer(event: Event) -> list[Reply]:
            return [Reply(where=where_for(fake), text=f"{event.command} #{event.turn_id}: done (late)")]

        again = StandInConversation(answer)
        second = await start_bot(again, inbox=Inbox(db))
        late = await fake.wait_request(route="followup")
        assert late.json["content"] == "approve #31: done (late)"
        (event,) = again.events
        assert (event.command, event.turn_id, event.channel_id) == ("approve", 31, fake.channel_id)
        assert event.user_id == str(click.payload["member"]["user"]["id"])
        await second.tasks.drain()
        assert [r.state for r in await _rows(db)] == [InboxState.DONE]
    finally:
        stuck.gate.set()
        await db.dispose()


class _HeardInbox(Inbox):
    """The real inbox; a test can wait for its next done mark."""

    marked: asyncio.Event

    async def done(self, item_id: int) -> None:
        await super().done(item_id)
        self.marked.set()


async def test_a_handled_click_leaves_its_row_done(fake: FakeDiscord, start_bot: StartBot, tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    await db.upgrade()
    try:
        conversation = StandInConversation(lambda event: [Reply(where=where_for(fake), text="ok")])
        inbox = _HeardInbox(db)
        await start_bot(conversation, inbox=inbox)
        result_id = await _result_with(fake, conversation, tmp_path, turn_id=5, button=Button.UNDO)
        inbox.marked = asyncio.Event()
        await fake.send_interaction(fake.component_click(result_id, "persona:undo:5"))
        await fake.wait_request(route="followup")
        await asyncio.wait_for(inbox.marked.wait(), 10)
        (row,) = await _rows(db)
        assert row.state == InboxState.DONE and row.payload["args"] == {"action": "undo", "turn_id": 5}
        assert [e.command for e in conversation.events] == ["undo"]
    finally:
        await db.dispose()


async def test_a_click_whose_acknowledgement_failed_is_not_handled_after_a_restart(
    fake: FakeDiscord, start_bot: StartBot, tmp_path: Path
) -> None:
    """Discord showed the user "This interaction failed": the click must not come back to life
    (an approval, a regenerate) at the next start."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    await db.upgrade()
    try:
        conversation = StandInConversation(lambda event: [Reply(where=where_for(fake), text="ok")])
        inbox = _HeardInbox(db)
        first = await start_bot(conversation, inbox=inbox)
        result_id = await _result_with(fake, conversation, tmp_path, turn_id=8, button=Button.REGEN)
        fake.ack_deadline_s = 0.0  # every acknowledgement comes too late: 10062 Unknown interaction
        inbox.marked = asyncio.Event()
        await fake.send_interaction(fake.component_click(result_id, "persona:regen:8"))
        await asyncio.wait_for(inbox.marked.wait(), 10)
        assert [r.state for r in await _rows(db)] == [InboxState.DONE] and conversation.events == []
        await first.close()

        fake.ack_deadline_s = 3.0
        again = StandInConversation()
        second = await start_bot(again, inbox=Inbox(db))
        await fake.wait_until(lambda: second._delivered_pending)  # on_ready ran: its sweep is spawned
        await second.tasks.drain()
        assert again.events == []
    finally:
        await db.dispose()


class _SlowWriteInbox(_HeardInbox):
    """The real inbox whose inserts wait for ``written`` (a database slower than the 3 s rule allows)."""

    written: asyncio.Event

    async def _insert(self, batch):  # type: ignore[no-untyped-def]
        await self.written.wait()
        return await super()._insert(batch)


async def test_a_command_stored_too_late_is_answered_and_its_row_done_once_written(
    fake: FakeDiscord, start_bot: StartBot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store is waited for 1.5 s before the defer; a write that takes longer goes on, the
    command is answered at once, and the row is marked done when it lands (not left pending to be
    answered a second time by the next start)."""
    monkeypatch.setattr(pending, "STORE_TIMEOUT_S", 0.05)
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    await db.upgrade()
    try:
        conversation = StandInConversation(lambda event: [Reply(where=where_for(fake), text=f"{event.command}: ok")])
        inbox = _SlowWriteInbox(db)
        inbox.written, inbox.marked = asyncio.Event(), asyncio.Event()
        await start_bot(conversation, inbox=inbox)
        interaction = await fake.send_interaction(fake.slash_command("status"))
        await fake.wait_until(lambda: fake.requests_for("webhook_edit"))  # answered, the row not written yet
        assert fake.messages[interaction.original_message_id or 0]["content"] == "status: ok"
        assert await _rows(db) == []
        inbox.written.set()
        await asyncio.wait_for(inbox.marked.wait(), 10)
        assert [r.state for r in await _rows(db)] == [InboxState.DONE]
    finally:
        await db.dispose()
