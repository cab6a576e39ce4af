"""The embedded queue: the engine loads in a thread at start (readiness "loading" until then), and
the next job starts once the previous one's renders are done, while that one is still storing."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

from engine.jobs.events import Done
from engine.jobs.noop_engine import NoopEngine
from engine.jobs.queue import EmbeddedQueue
from engine.jobs.runner import JobRunner
from engine.specs import JobKind, JobResult, JobSpec, PersonaSpec
from storage.db import Database
from storage.repository import Store

WAIT_S = 10.0  # failure guard only: every wait below ends on an event


class _GatedEngine(NoopEngine):
    """load() waits for ``loaded``; run() calls on_model_free, then waits for ``stored`` to finish."""

    def __init__(self) -> None:
        super().__init__()
        self.loaded = threading.Event()
        self.stored = threading.Event()
        self.started: list[str] = []
        self.load_threads: list[str] = []

    def load(self) -> None:
        self.load_threads.append(threading.current_thread().name)
        assert self.loaded.wait(WAIT_S)

    def run(
        self,
        spec: JobSpec,
        on_progress: Callable[[int, int], None] | None = None,
        cancel: threading.Event | None = None,
        on_model_free: Callable[[], None] | None = None,
    ) -> JobResult:
        self.started.append(spec.job_id)
        if on_model_free is not None:
            on_model_free()
        if len(self.started) == 1:
            assert self.stored.wait(WAIT_S)  # the first job "encodes" until the test lets it go
        return JobResult()


async def _job(store: Store) -> JobSpec:
    spec = JobSpec(job_id=uuid.uuid4().hex, kind=JobKind.GENERATE, persona=PersonaSpec(archetype="sweet", seed=1))
    await store.create_job(
        spec.job_id, "generate", spec.model_dump(mode="json"), user_id=None, thread_id=None, platform="console"
    )
    return spec


async def test_warm_start_and_the_next_job_overlaps_the_previous_store(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'q.db'}")
    await db.upgrade()
    store = Store(db)
    engine = _GatedEngine()
    queue = EmbeddedQueue(store, lambda bus: JobRunner(engine, store, bus))
    done: dict[str, asyncio.Event] = {}
    events = queue.bus.subscribe()

    async def listen() -> None:
        async for event in events:
            if isinstance(event, Done):
                done.setdefault(event.job_id, asyncio.Event()).set()

    listener = asyncio.create_task(listen())
    try:
        await queue.start()
        assert queue.readiness == "loading"
        # the event loop is free while the engine loads in its thread
        await asyncio.wait_for(asyncio.to_thread(lambda: None), WAIT_S)
        assert engine.load_threads and engine.load_threads[0] != threading.main_thread().name
        engine.loaded.set()
        first, second = await _job(store), await _job(store)
        for spec in (first, second):
            done[spec.job_id] = asyncio.Event()
            await queue.enqueue(spec)
        await asyncio.wait_for(done[second.job_id].wait(), WAIT_S)  # ran while the first still stores
        assert queue.readiness == "ready"
        assert engine.started == [first.job_id, second.job_id]
        assert not done[first.job_id].is_set()
        engine.stored.set()
        await asyncio.wait_for(done[first.job_id].wait(), WAIT_S)
        assert (await store.get_job(first.job_id)).status == "done"
    finally:
        listener.cancel()
        engine.loaded.set()
        engine.stored.set()
        await queue.close()
        await db.dispose()


class _LongClipEngine(NoopEngine):
    """A clip runs until ``clip_may_end`` is set (a long render); other jobs return at once."""

    def __init__(self) -> None:
        super().__init__()
        self.clip_may_end = threading.Event()
        self.clip_started = threading.Event()

    def run(
        self,
        spec: JobSpec,
        on_progress: Callable[[int, int], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> JobResult:
        if spec.kind == JobKind.VIDEO:
            self.clip_started.set()
            assert self.clip_may_end.wait(WAIT_S)
        return JobResult()


async def test_an_image_job_does_not_wait_in_line_behind_a_running_clip(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'q.db'}")
    await db.upgrade()
    store = Store(db)
    engine = _LongClipEngine()
    queue = EmbeddedQueue(store, lambda bus: JobRunner(engine, store, bus))
    events = queue.bus.subscribe()
    try:
        await queue.start()
        clip = JobSpec(job_id=uuid.uuid4().hex, kind=JobKind.VIDEO, persona=PersonaSpec(archetype="sweet"))
        await store.create_job(clip.job_id, "video", clip.model_dump(mode="json"), user_id=None, thread_id=None,
                               platform="console")  # fmt: skip
        await queue.enqueue(clip)
        assert await asyncio.to_thread(engine.clip_started.wait, WAIT_S)
        image = await _job(store)
        await queue.enqueue(image)
        assert await queue.position(image.job_id) in (0, None)  # nothing of its own queue is ahead
        async with asyncio.timeout(WAIT_S):
            async for event in events:
                if isinstance(event, Done) and event.job_id == image.job_id:
                    break
        assert (await store.get_job(clip.job_id)).status == "running"  # the clip is still rendering
        engine.clip_may_end.set()
    finally:
        engine.clip_may_end.set()
        await queue.close()
        await db.dispose()
