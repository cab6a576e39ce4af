"""redis restarted while the worker idles: the worker carries on (arq's loop itself survives, no
restart of it), the front end's progress subscription comes back, a new job completes."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from bot.app import build_app
from commands.events import Images, Progress
from engine.jobs.worker_health import health
from storage.models import JobStatus
from tests.conversation.helpers import queued, run
from tests.queue.conftest import Recorder, arq_settings, console_for, wait_health, worker_task
from tests.services import RedisServer

pytestmark = pytest.mark.slow


class LogWatch(logging.Handler):
    """Wait until a log message containing some text has been emitted."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.loop = asyncio.get_running_loop()
        self.messages: list[str] = []
        self.changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        self.loop.call_soon_threadsafe(self.changed.set)

    def seen(self, text: str) -> bool:
        return any(text in message for message in self.messages)

    async def wait(self, text: str, limit_s: float = 30.0) -> None:
        async def check() -> None:
            while not self.seen(text):
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(check(), limit_s)


async def test_worker_and_front_end_survive_a_redis_restart(
    tmp_path: Path,
    shared_dirs: dict[str, Path],
    tiny_engine: Any,
    fresh_redis: RedisServer,
) -> None:
    logs = LogWatch()
    root = logging.getLogger()
    root.addHandler(logs)
    old_level = root.level
    root.setLevel(logging.INFO)
    settings = arq_settings(tmp_path, shared_dirs, fresh_redis.url)
    app = await build_app(settings, engine=tiny_engine)
    recorder = await Recorder(app.conversation.queue.bus).start()
    ann = console_for(app, tmp_path)
    try:
        async with worker_task(settings, tiny_engine) as worker:
            await run(ann, "/persona create sweet Mia")
            await wait_health(fresh_redis.url)

            fresh_redis.stop()
            await logs.wait("lost redis")  # the idle worker noticed
            await logs.wait("progress subscription lost")  # and the front end
            fresh_redis.start()  # same port, empty
            await wait_health(fresh_redis.url, limit_s=10)  # the worker reports again at once
            assert not worker.done()

            created = await run(ann, "/persona create elegant Zoe")
            job_id = queued(created)[0]
            # its events came over the subscription the front end had before the restart
            await recorder.wait_for(lambda e: e.job_id == job_id and e.state == "done", 30)
            assert [a for a in ann.actions if isinstance(a, Progress) and a.job_id == job_id and a.state == "running"]
            assert not worker.done()
        job = await app.store.get_job(job_id)
        assert job.status == JobStatus.DONE and job.attempts == 1
        assert len([a for a in ann.actions if isinstance(a, Images) and a.job_id == job_id]) == 1
        assert logs.seen("redis is back")
        assert not logs.seen("starting the worker loop again")  # arq's loop survived by itself
        assert await health(fresh_redis.url) is None  # the worker removed its key when it stopped
    finally:
        await recorder.stop()
        await app.close()
        root.removeHandler(logs)
        root.setLevel(old_level)
