"""Issue 20, answer time: in a burst of commands, the work that follows an answer (a post's
thread, its binding, its jobs) waits while other commands are still before their answer
(bot.answers_first), so the last answers of a burst do not queue behind the first ones' work."""

from __future__ import annotations

import asyncio

from bot.answers_first import AnswersFirst
from commands.events import Event, OpenThread, Progress, Reply, Where
from tests.discord.conftest import StartBot
from tests.discord.standin import StandInConversation
from tests.fakes.discord_server import FakeDiscord


async def _until(condition, timeout_s: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    """Yield to the loop until ``condition()`` holds (bounded): a counter of the code under test,
    which offers no event for it (a test-only hook would be code for the tests alone)."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0)


async def test_follow_up_work_waits_for_the_answers_still_to_come() -> None:
    gate = AnswersFirst(max_wait_s=60)
    first, second = gate.answering(), gate.answering()
    first.answered()
    waiting = asyncio.create_task(gate.after_answers())
    await _until(lambda: gate.held == 1)
    assert not waiting.done() and gate.before_answer == 1
    first.answered()  # a second call changes nothing
    assert gate.before_answer == 1
    second.answered()
    await asyncio.wait_for(waiting, 5)
    assert gate.held == 0 and gate.before_answer == 0


async def test_follow_up_work_is_held_back_at_most_max_wait() -> None:
    gate = AnswersFirst(max_wait_s=0.01)
    gate.answering()  # never answered (a command stuck in a slow backend)
    await asyncio.wait_for(gate.after_answers(), 5)
    assert gate.held == 0


async def test_a_post_thread_opens_after_the_other_commands_are_answered(
    fake: FakeDiscord, start_bot: StartBot
) -> None:
    slow = asyncio.Event()

    async def script(event: Event) -> list:
        where = Where(platform="discord", user_id=event.user_id, channel_id=event.channel_id)
        if event.command == "post":
            where = Where(platform="discord", user_id=event.user_id, channel_id=event.channel_id, thread_db_id=3)
            return [
                OpenThread(where=where, title="mia · latte", text="📸 Post #3 · mia: a latte"),
                Progress(where=where, job_id="j3", state="queued", position=0),
            ]
        await slow.wait()  # /status of another user: still being handled
        return [Reply(where=where, text="status: nothing running")]

    conversation = StandInConversation(script)
    bot = await start_bot(conversation)
    bot.answers.max_wait_s = 60
    other = fake.add_user("bo")
    fake.add_member(fake.guild_id, other)
    mark = fake.mark()
    status = await fake.send_interaction(fake.slash_command("status", user=other))
    await conversation.wait_events(1)
    await fake.send_interaction(fake.slash_command("post", {"persona": "mia", "prompt": "a latte"}))
    answer = await fake.wait_request(
        lambda r: "📸 Post #3" in ((r.json or {}).get("content") or ""), route="webhook_edit", since=mark
    )
    await _until(lambda: bot.answers.held == 1)  # the post's follow-up waits for /status's answer
    assert not fake.requests_for("create_thread_from_message", mark) and conversation.binds == []

    slow.set()
    thread = await fake.wait_request(route="create_thread_from_message", since=mark)
    await conversation.wait_binds(1)
    status_answer = await fake.wait_request(
        lambda r: r.vars.get("token") == status.token, route="webhook_edit", since=mark
    )
    assert answer.index < status_answer.index < thread.index
    assert bot.answers.before_answer == 0 and bot.answers.held == 0
