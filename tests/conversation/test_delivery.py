"""Results reach the user once: a failed send is retried, a crash mid-delivery is recovered."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bot.app import build_app
from bot.console import ConsoleFrontEnd
from commands.events import Action, Event, EventKind, Images, Progress
from tests.conversation.conftest import app_settings
from tests.conversation.helpers import queued


def _create(user: str, name: str) -> Event:
    return Event(
        platform="console", user_id=user, kind=EventKind.COMMAND, command="persona", args=f"create sweet {name}"
    )


async def test_a_failed_send_is_retried_and_delivered_once(
    tmp_path: Path, shared_dirs: dict[str, Path], tiny_engine: Any
) -> None:
    app = await build_app(app_settings(tmp_path, shared_dirs), engine=tiny_engine)
    try:
        attempts: list[list[Action]] = []
        delivered = asyncio.Event()

        async def flaky(actions: Sequence[Action]) -> None:
            if not any(isinstance(a, Images) for a in actions):
                return  # progress
            attempts.append(list(actions))
            if len(attempts) == 1:
                raise ConnectionError("platform hiccup")
            delivered.set()

        app.conversation.add_deliverer("console", flaky)
        job_id = queued(await app.conversation.handle(_create("ann", "Mia")))[0]
        await asyncio.wait_for(delivered.wait(), 60)  # the sweep retries the failed send
        # waits for the send in flight to be confirmed (it holds its delivery lock), sends nothing new
        assert await app.conversation.deliver_pending("console") == 0
        job = await app.store.get_job(job_id)
        assert job.delivered
        assert len(attempts) == 2
    finally:
        await app.close()


async def test_a_front_end_that_died_mid_delivery_is_taken_over_on_start(
    tmp_path: Path, shared_dirs: dict[str, Path], tiny_engine: Any
) -> None:
    settings = app_settings(tmp_path, shared_dirs)
    first = await build_app(settings, engine=tiny_engine)
    sending = asyncio.Event()

    async def hangs(actions: Sequence[Action]) -> None:
        if any(isinstance(a, Images) for a in actions):
            sending.set()
            await asyncio.Event().wait()  # the process dies while sending

    first.conversation.add_deliverer("console", hangs)
    job_id = queued(await first.conversation.handle(_create("ann", "Mia")))[0]
    await asyncio.wait_for(sending.wait(), 60)
    await first.close()  # killed: the claim stays, the result is not marked delivered

    second = await build_app(settings, engine=tiny_engine)
    try:
        stale = await second.store.get_job(job_id)
        assert stale.delivery_started_at is not None and not stale.delivered
        front = ConsoleFrontEnd(second.conversation, tmp_path / "out", user="ann", stream=io.StringIO(), live=False)
        assert await second.conversation.deliver_pending("console") == 1
        results = [a for a in front.actions if isinstance(a, Images) and a.job_id == job_id]
        assert len(results) == 1 and "Mia" in results[0].text
        assert [a.state for a in front.actions if isinstance(a, Progress)] == ["done"]
        assert (await second.store.get_job(job_id)).delivered
        assert await second.conversation.deliver_pending("console") == 0
    finally:
        await second.close()


async def test_a_send_that_keeps_failing_is_given_up_after_a_few_tries(
    tmp_path: Path, shared_dirs: dict[str, Path], tiny_engine: Any
) -> None:
    from commands.delivery import MAX_DELIVERY_ATTEMPTS

    app = await build_app(app_settings(tmp_path, shared_dirs), engine=tiny_engine)
    try:
        delivery = app.conversation.delivery
        delivery.retry_base_s = 0.0  # no backoff wait in the test
        events = app.conversation.queue.bus.subscribe()
        job_id = queued(await app.conversation.handle(_create("ann", "Mia")))[0]
        async with asyncio.timeout(60):  # finished while no console front end listens
            async for event in events:
                if event.job_id == job_id and event.state == "done":
                    break
        await events.aclose()
        sends: list[int] = []

        async def thread_deleted(actions: Sequence[Action]) -> None:
            sends.append(1)
            raise LookupError("Unknown Channel")

        app.conversation.add_deliverer("console", thread_deleted)
        for _ in range(2 * MAX_DELIVERY_ATTEMPTS):
            await delivery.deliver_job(job_id)
            if (await app.store.get_job(job_id)).delivered:
                break
        job = await app.store.get_job(job_id)
        assert job.delivered and job.delivery_attempts == MAX_DELIVERY_ATTEMPTS  # given up, logged
        assert len(sends) == MAX_DELIVERY_ATTEMPTS
        assert await app.conversation.deliver_pending("console") == 0
        assert len(sends) == MAX_DELIVERY_ATTEMPTS  # never sent again
    finally:
        await app.close()
