"""A result that finished while its front end could not deliver it is delivered once after the
front end restarts (arq queue, worker in this process, same database): the platform was down
(the send raised), or the front end died in the middle of the send (its claim is taken over)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from bot.app import build_app
from commands.events import Action, Images
from storage.models import JobStatus
from tests.conversation.helpers import queued
from tests.queue.conftest import arq_settings, console_for, worker_task


@pytest.mark.parametrize("failure", ["send raises", "front end dies mid-send"])
async def test_undelivered_result_is_delivered_once_after_a_restart(
    failure: str, tmp_path: Path, shared_dirs: dict[str, Path], tiny_engine: Any, redis_url: str
) -> None:
    settings = arq_settings(tmp_path, shared_dirs, redis_url)
    async with worker_task(settings, tiny_engine):
        app = await build_app(settings, engine=tiny_engine)
        try:
            app.conversation.delivery.retry_base_s = 0.0  # a failed send may be retried at once
            console = console_for(app, tmp_path)
            attempts: list[str] = []
            tried = asyncio.Event()

            async def broken(actions: Sequence[Action]) -> None:
                job_ids = [a.job_id for a in actions if isinstance(a, Images)]
                if job_ids:
                    attempts.extend(job_ids)
                    tried.set()
                    if failure == "send raises":
                        raise ConnectionError("platform unreachable")
                    await asyncio.Event().wait()  # hangs until the front end goes away

            app.conversation.add_deliverer("console", broken)
            job_id = queued(await console.send("/persona create sweet Mia"))[0]
            await asyncio.wait_for(tried.wait(), 60)
            job = await app.store.get_job(job_id)
            assert job.status == JobStatus.DONE and not job.delivered
        finally:
            await app.close()  # the front end goes away with the result undelivered
        assert attempts and set(attempts) == {job_id}
        assert not (await app.store.get_job(job_id)).delivered

        app = await build_app(settings, engine=tiny_engine)
        try:
            console = console_for(app, tmp_path)
            assert await app.conversation.deliver_pending("console") == 1
            assert await app.conversation.deliver_pending("console") == 0
            delivered = [a for a in console.actions if isinstance(a, Images) and a.job_id == job_id]
            assert len(delivered) == 1 and "Mia" in delivered[0].text
            assert (await app.store.get_job(job_id)).delivered
        finally:
            await app.close()
