"""A WeCom front end that stops cleanly (SIGTERM, a deploy) lets its inbox rows go: another front
end on the database takes the message it had in hand at once, not after its lease lapsed (a
killed one's rows wait for the lapse: tests/wecom/test_wecom_two_front_ends.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from commands.events import Action, Event
from storage.db import Database
from storage.inbox import Inbox
from storage.models import InboxOwner
from tests.wecom.harness import StandInConversation, WeComHarness

ALICE = "alice.zhang"


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    await database.upgrade()
    yield database
    await database.dispose()


async def test_a_clean_stop_hands_the_message_in_hand_to_another_front_end_at_once(db: Database) -> None:
    in_hand, never = asyncio.Event(), asyncio.Event()

    async def script(_event: Event) -> list[Action]:
        in_hand.set()
        await never.wait()  # still being handled when the front end stops
        return []

    async with WeComHarness(StandInConversation(script), inbox=Inbox(db, owner="host:8001")) as h:
        await h.bot.keeper.once()  # its lease, as the keeper's beat writes it
        assert (await h.say(ALICE, "/status"))[0] == 200
        await asyncio.wait_for(in_hand.wait(), 10)
        platform = h.bot.inbox_platform
        survivor = Inbox(db, owner="host:8002")
        assert await survivor.take_over(platform) == []  # held while it runs

        await h.bot.stop(timeout_s=0.1)  # the handler does not finish in time: cancelled

        taken = await survivor.take_over(platform)  # the next beat: no lease to wait out
    assert [(item.owner, item.payload["Content"]) for item in taken] == [("host:8002", "/status")]
    async with db.read() as s:
        assert await s.scalar(InboxOwner.__table__.select().where(InboxOwner.owner == "host:8001")) is None
