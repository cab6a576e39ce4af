"""What the callback server refuses and what it keeps: replays outside the window, other AgentIDs,
repeats (the inbox's key, which survives a restart and needs no redis), two clicks in one second,
forged card ids, images that cannot be used."""

from __future__ import annotations

from pathlib import Path

from commands.events import Event, EventKind
from storage.db import Database
from storage.inbox import Inbox
from tests.fakes.wecom_api import FakeWeComAPI
from tests.services import free_port
from tests.wecom.conftest import FakeClock
from tests.wecom.harness import (
    AGENT_ID,
    CORP_ID,
    SECRET,
    StandInConversation,
    WeComHarness,
    WeComSender,
    card_click_xml,
    image_xml,
    text_xml,
)

ALICE = "alice.zhang"
NOW = 1_760_000_000.0
TWO_DAYS = 2 * 86400


async def _inbox(tmp_path: Path) -> tuple[Database, Inbox]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'inbox.db'}")
    await db.upgrade()
    return db, Inbox(db)


async def test_replays_outside_the_window_are_refused_and_inside_it_deduped_across_a_restart(
    tmp_path: Path,
) -> None:
    db, inbox = await _inbox(tmp_path)
    clock = FakeClock(NOW)
    conversation = StandInConversation()
    sender = WeComSender()
    captured = sender.envelope(text_xml(ALICE, "/status"), timestamp=str(int(NOW)))
    async with FakeWeComAPI(CORP_ID, SECRET, AGENT_ID) as fake:
        async with WeComHarness(conversation, fake=fake, inbox=inbox, clock=clock) as h:
            old = sender.envelope(text_xml(ALICE, "/help"), timestamp=str(int(NOW) - TWO_DAYS))
            assert (await h.post_raw(*old))[0] == 403  # signed two days ago
            future = sender.envelope(text_xml(ALICE, "/help"), timestamp=str(int(NOW) + 301))
            assert (await h.post_raw(*future))[0] == 403
            assert (await h.post_raw(*captured))[0] == 200
            await h.settle()
        # a restart (no redis anywhere): the captured callback replayed inside the window is a repeat
        async with WeComHarness(conversation, fake=fake, inbox=inbox, clock=clock) as h:
            clock.now += 299
            assert (await h.post_raw(*captured))[0] == 200
            await h.settle()
            clock.now += 2  # 301 s after it was signed: refused, whatever the dedupe holds
            assert (await h.post_raw(*captured))[0] == 403
            await h.settle()
    assert [e.command for e in conversation.events] == ["status"]
    await db.dispose()


async def test_a_signed_callback_for_another_agent_is_refused() -> None:
    conversation = StandInConversation()
    async with WeComHarness(conversation) as h:
        status, _ = await h.post(text_xml(ALICE, "/status", agent_id=AGENT_ID + 1))
        assert status == 403
        status, _ = await h.post(text_xml(ALICE, "/status"))
        assert status == 200
        await h.settle()
    assert [e.channel_id for e in conversation.events] == [AGENT_ID]


async def test_two_card_clicks_in_the_same_second_are_both_handled() -> None:
    conversation = StandInConversation()
    async with WeComHarness(conversation) as h:
        second = 1_700_000_500
        approve = card_click_xml(ALICE, event_key="approve:7", task_id="turn-7-a", create_time=second)
        undo = card_click_xml(ALICE, event_key="undo:7", task_id="turn-7-a", create_time=second)
        for message in (approve, undo, approve):  # the third is WeCom's retry of the first
            assert (await h.post(message))[0] == 200
        await h.settle()
    assert [(e.command, e.turn_id) for e in conversation.events] == [("approve", 7), ("undo", 7)]


async def test_a_forged_card_id_gets_a_clear_answer() -> None:
    conversation = StandInConversation()
    async with WeComHarness(conversation) as h:
        for key in ("approve:99999999999999999999999", "regen:²", "undo:-3"):
            assert (await h.post(card_click_xml(ALICE, event_key=key)))[0] == 200
        await h.settle()
        texts = h.fake.texts_to(ALICE)
    assert conversation.events == []
    assert len(texts) == 3 and all("no longer exists" in t and "出错" not in t for t in texts)


async def test_too_large_and_empty_images_are_named() -> None:
    conversation = StandInConversation()
    async with WeComHarness(conversation) as h:
        big = h.fake.add_media(b"\xff" * (25 * 1024 * 1024))
        empty = h.fake.add_media(b"")
        await h.post(image_xml(ALICE, media_id=big, pic_url=h.fake.pic_url(big)))
        await h.settle()
        await h.post(image_xml(ALICE, media_id=empty, pic_url=h.fake.pic_url(empty)))
        await h.settle()
        texts = h.fake.texts_to(ALICE)
    assert conversation.events == []
    assert "larger than 20 MB" in texts[0] and "again" not in texts[0]
    assert "empty" in texts[1] and "again" not in texts[1]


async def test_callbacks_are_accepted_while_redis_is_away() -> None:
    """REDIS_URL points at nothing (redis down): callbacks are still stored, answered 200, handled once."""
    conversation = StandInConversation(lambda e: [])
    dead = f"redis://127.0.0.1:{free_port()}/0"
    async with WeComHarness(conversation, settings_overrides={"redis_url": dead}) as h:
        message = text_xml(ALICE, "/status")
        statuses = [(await h.post(message))[0] for _ in range(3)]
        await h.settle()
    assert statuses == [200, 200, 200]
    assert [e.kind for e in conversation.events] == [EventKind.COMMAND]
    assert isinstance(conversation.events[0], Event)
