"""Issue 20 item 1: no lost reply. A message that arrives while redis is down is answered (the
access token is cached in the process too), and a reply WeCom could not take stays in the inbox
row's outbox and goes out later: the row is done only once its reply went out, exactly once."""

from __future__ import annotations

from sqlalchemy import select

from commands.events import Event, Reply, Where
from storage.models import InboxItem, InboxState
from tests.services import RedisServer
from tests.wecom.harness import StandInConversation, WeComHarness

ALICE = "alice.zhang"


def pong(event: Event) -> list[Reply]:
    return [Reply(where=Where(platform="wecom", user_id=event.user_id), text=f"pong {event.text}")]


async def _rows(h: WeComHarness) -> list[InboxItem]:
    async with h.bot.inbox.db.read() as s:
        return list(await s.scalars(select(InboxItem).order_by(InboxItem.id)))


async def test_message_while_redis_is_down_is_answered_once(fresh_redis: RedisServer) -> None:
    async with WeComHarness(
        StandInConversation(pong), settings_overrides={"redis_url": fresh_redis.url}, keep_every_s=0.2
    ) as h:
        fresh_redis.stop()
        try:
            status, _ = await h.say(ALICE, "hello while redis is down")
            assert status == 200
            await h.settle()
        finally:
            fresh_redis.start()
        await h.fake.wait_for(lambda f: any("pong" in t for t in f.texts_to(ALICE)), within_s=20)
        await h.settle()
        assert [t for t in h.fake.texts_to(ALICE) if "pong" in t] == ["pong hello while redis is down"]
        assert [row.state for row in await _rows(h)] == [InboxState.DONE]


async def test_reply_wecom_refused_is_kept_and_sent_later(fresh_redis: RedisServer) -> None:
    async with WeComHarness(StandInConversation(pong), keep_every_s=0.2) as h:
        h.fake.fail_next("message/send", -1, times=2)  # WeCom busy: the first send and its first retry
        status, _ = await h.say(ALICE, "hello while wecom is busy")
        assert status == 200
        await h.settle()
        (row,) = await _rows(h)
        assert row.state == InboxState.REPLYING and [m["text"] for m in row.reply] == ["pong hello while wecom is busy"]
        assert h.fake.texts_to(ALICE) == []

        await h.fake.wait_for(lambda f: bool(f.texts_to(ALICE)), within_s=30)
        await h.settle()
        assert h.fake.texts_to(ALICE) == ["pong hello while wecom is busy"]
        (row,) = await _rows(h)
        assert row.state == InboxState.DONE and row.reply is None
