"""Issue 20, answer time: WeCom's answer (the 200 after the inbox write) never waits for handling.
Accepted callbacks are handled at most HANDLING_CONCURRENCY at a time, the rest wait their turn
with their rows stored, so a burst of slow commands cannot hold the next callback's answer."""

from __future__ import annotations

import asyncio

from bot.wecom.server import HANDLING_CONCURRENCY
from commands.events import Action, Event
from tests.wecom.harness import StandInConversation, WeComHarness

LIMIT_S = 10.0  # only a bound for a test that fails: the waits below end on events


class StuckConversation(StandInConversation):
    """Every command is handled until ``gate`` opens; counts how many are inside at once."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.inside = 0
        self.most_inside = 0
        self.changed = asyncio.Condition()

    async def handle(self, event: Event) -> list[Action]:
        self.events.append(event)
        self.inside += 1
        self.most_inside = max(self.most_inside, self.inside)
        async with self.changed:
            self.changed.notify_all()
        try:
            await self.gate.wait()
        finally:
            self.inside -= 1
        return []

    async def wait_inside(self, count: int) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: self.inside >= count), LIMIT_S)


async def test_callbacks_are_answered_while_handling_is_full_and_handled_a_few_at_a_time() -> None:
    conversation = StuckConversation()
    async with WeComHarness(conversation) as h:
        users = [f"user{n}" for n in range(10)]
        answers = await asyncio.wait_for(asyncio.gather(*(h.say(user, "/help") for user in users)), LIMIT_S)
        assert [status for status, _ in answers] == [200] * len(users)  # answered, handling still stuck
        await conversation.wait_inside(HANDLING_CONCURRENCY)
        late = await asyncio.wait_for(h.say("late", "/help"), LIMIT_S)
        assert late[0] == 200  # a callback after the burst does not queue behind it either
        assert conversation.inside == HANDLING_CONCURRENCY and len(conversation.events) == HANDLING_CONCURRENCY
        conversation.gate.set()
        await asyncio.wait_for(h.settle(), LIMIT_S)
        assert sorted(e.user_id for e in conversation.events) == sorted([*users, "late"])
        assert conversation.most_inside == HANDLING_CONCURRENCY
