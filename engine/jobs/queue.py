"""The job queue as the commands layer sees it: enqueue, cancel, position, progress.

Two implementations behind one interface:

* :class:`EmbeddedQueue` (REDIS_URL unset): the same job function runs in this process, one job
  on the model at a time, in a background task; events go through a :class:`LocalBus`. The
  engine loads in a thread when the queue starts (``readiness`` says ``loading`` until then), and
  the next job starts as soon as the previous one's renders are done, while its images are
  still being encoded and stored.
* :class:`ArqQueue` (REDIS_URL set): jobs go to arq workers (engine/jobs/worker.py) through redis;
  events come back over redis pub/sub.

The job itself is plain JSON (``JobSpec.model_dump(mode="json")``); its storage row is created
by the caller before :meth:`enqueue`, so a restart never loses a job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from arq.constants import abort_jobs_ss, default_queue_name, in_progress_key_prefix, job_key_prefix

from engine.jobs import routing
from engine.jobs.events import Queued
from engine.jobs.outcomes import finish_job
from engine.jobs.progress import LocalBus, ProgressBus, RedisBus
from engine.jobs.queues import ARQ_QUEUES, IMAGES, arq_queue_of, queue_of_spec
from engine.specs import JobSpec
from storage.models import JobStatus
from storage.repository import Store

log = logging.getLogger(__name__)

ARQ_QUEUE_NAME = default_queue_name
ARQ_FUNCTION = "run_job"
ARQ_ABORT_KEY = abort_jobs_ss  # arq's abort set (job id -> time of the request, ms)
ARQ_JOB_PREFIX = job_key_prefix
IN_PROGRESS_PREFIX = in_progress_key_prefix
RECONCILE_INTERVAL_S = 5.0
#: a running job without a job key or in-progress key in redis this long is queued again (the
#: worker's lease is 10 s and its heartbeat writes the key again every 3 s, even into an empty redis)
LAPSED_LEASE_GRACE_S = 10.0
#: published on enqueue and cancel; idle workers wait on it (engine/jobs/worker.py)
WAKE_CHANNEL = "persona-studio:wake"


class JobQueue(Protocol):
    bus: ProgressBus

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def enqueue(self, spec: JobSpec) -> None: ...

    async def cancel(self, job_id: str) -> bool: ...

    async def position(self, job_id: str) -> int | None:
        """Jobs ahead of a waiting job (0 = next); None when it is not waiting."""
        ...


@dataclass
class _Running:
    job_id: str
    queue: str = IMAGES
    cancel: threading.Event = field(default_factory=threading.Event)


class EmbeddedQueue:
    """In-process queues (images, video, training; engine.jobs.queues): FIFO each, ``concurrency``
    jobs at a time of each. Jobs of different queues run side by side and take turns on the model
    through the engine lock, which a clip lends to waiting jobs between its steps: an image turn
    never waits in line behind a clip."""

    def __init__(self, store: Store, runner_factory: Callable[[ProgressBus], Any], *, concurrency: int = 1) -> None:
        self.store = store
        self.bus = LocalBus()
        self._runner_factory = runner_factory
        self._runner: Any = None
        self._waiting: dict[str, list[dict[str, Any]]] = {name: [] for name in ARQ_QUEUES}
        self._running: dict[str, _Running] = {}
        self._wake: dict[str, asyncio.Event] = {name: asyncio.Event() for name in ARQ_QUEUES}
        #: runs the workers' task group; cancelling it stops every worker
        self._workers: asyncio.Task[None] | None = None
        self._warming: asyncio.Task[None] | None = None
        #: jobs whose renders are done and whose images are being stored
        self._finishing: set[asyncio.Task[None]] = set()
        self._concurrency = concurrency

    async def start(self) -> None:
        """Start the workers, re-queueing jobs a previous run left unfinished; start loading the
        engine in a thread (a runner with ``start_warm()``)."""
        if self._workers is not None:
            return
        self._runner = self._runner_factory(self.bus)
        for job in await self.store.unfinished_jobs():
            log.info("re-queueing unfinished job %s (%s)", job.id, job.status)
            self._waiting[queue_of_spec(job.spec)].append(job.spec)
        if hasattr(self._runner, "start_warm"):
            self._warming = self._runner.start_warm()
        self._workers = asyncio.create_task(self._run_workers(), name="embedded-workers")
        for wake in self._wake.values():
            wake.set()

    @property
    def readiness(self) -> str:
        """``ready``, ``loading`` (the model is still loading), ``cold`` or ``failed: ...``."""
        return str(getattr(self._runner, "readiness", "ready")) if self._runner is not None else "cold"

    async def _run_workers(self) -> None:
        async with asyncio.TaskGroup() as group:
            for queue in ARQ_QUEUES:
                for i in range(self._concurrency):
                    group.create_task(self._work(queue), name=f"embedded-{queue}-worker-{i}")

    async def close(self) -> None:
        for running in self._running.values():
            running.cancel.set()
        tasks = [t for t in (self._workers, self._warming, *self._finishing) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._workers = self._warming = None

    async def enqueue(self, spec: JobSpec) -> None:
        spec_json = spec.model_dump(mode="json")
        queue = queue_of_spec(spec_json)
        self._waiting[queue].append(spec_json)
        await self.bus.publish(Queued.build(spec.job_id, position=await self.position(spec.job_id)))
        self._wake[queue].set()

    async def cancel(self, job_id: str) -> bool:
        for waiting in self._waiting.values():
            for index, spec in enumerate(waiting):
                if spec["job_id"] == job_id:
                    del waiting[index]
                    await finish_job(self.store, self.bus, job_id, JobStatus.CANCELLED)
                    return True
        running = self._running.get(job_id)
        if running is not None:
            running.cancel.set()
            return True
        return False

    async def position(self, job_id: str) -> int | None:
        """Jobs ahead in its own queue: waiting before it, and those of that queue running."""
        for queue, waiting in self._waiting.items():
            for index, spec in enumerate(waiting):
                if spec["job_id"] == job_id:
                    return index + sum(1 for r in self._running.values() if r.queue == queue)
        return None

    async def _work(self, queue: str) -> None:
        """One slot of ``queue``: run a job, and take the next once the job's renders are done."""
        loop = asyncio.get_running_loop()
        waiting, wake = self._waiting[queue], self._wake[queue]
        while True:
            while not waiting:
                wake.clear()
                await wake.wait()
            spec = waiting.pop(0)
            running = _Running(spec["job_id"], queue)
            self._running[running.job_id] = running
            model_free = asyncio.Event()
            task = asyncio.create_task(
                self._execute(spec, running, lambda e=model_free: loop.call_soon_threadsafe(e.set)),
                name=f"embedded-job-{running.job_id}",
            )
            self._finishing.add(task)
            task.add_done_callback(self._finishing.discard)
            task.add_done_callback(lambda _t, e=model_free: e.set())
            await model_free.wait()

    async def _execute(self, spec: dict[str, Any], running: _Running, on_model_free: Callable[[], None]) -> None:
        try:
            await self._runner.execute(spec, running.cancel, final_attempt=True, on_model_free=on_model_free)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("embedded job %s crashed", running.job_id)
        finally:
            self._running.pop(running.job_id, None)


class ArqQueue:
    """Client side of the arq queue: enqueue JSON specs, read positions, abort jobs.

    Every enqueue and cancel also publishes on :data:`WAKE_CHANNEL`: idle workers wait on it
    instead of polling redis every few milliseconds, so a job starts within a few ms.
    """

    #: publish on WAKE_CHANNEL on enqueue/cancel (bench/queue.py turns it off to show the difference)
    wake_workers = True
    #: pin a thread's job to its warm worker for a short grace (engine.jobs.routing; benches turn it off)
    route_warm = True

    #: how often the reconciler compares storage with redis (a lost job waits at most this long)
    reconcile_interval_s = RECONCILE_INTERVAL_S

    def __init__(self, redis_url: str, store: Store) -> None:
        self.redis_url = redis_url
        self.store = store
        self.pool: Any = None
        self.bus: ProgressBus = LocalBus()  # replaced by a RedisBus in start()
        self._reconciler: asyncio.Task[None] | None = None
        #: running jobs that redis holds neither queued nor leased: when that was first seen
        self._lease_missing_since: dict[str, float] = {}

    async def start(self) -> None:
        from arq import create_pool

        if self.pool is None:
            self.pool = await create_pool(redis_settings(self.redis_url))
            self.bus = RedisBus(self.pool)
            await self.reconcile(running_too=True)
            self._reconciler = asyncio.create_task(self._reconcile_forever(), name="arq-reconciler")

    async def reconcile(self, *, running_too: bool = False) -> int:
        """Storage is the record: queued jobs that redis no longer holds (a redis restart without
        persistence) are queued again; how many. ``running_too`` (on start) includes every running
        job redis lost. Later, a running job is queued again only once its lease has lapsed: redis
        holds neither the job nor a worker's in-progress key for :data:`LAPSED_LEASE_GRACE_S` (a
        live worker's heartbeat writes that key again within a few seconds of a redis restart; a
        worker killed while redis was down never does). arq ignores ids it still knows, and a
        worker skips a job that storage says is finished."""
        jobs = [j for j in await self.store.unfinished_jobs() if j.status in (JobStatus.QUEUED, JobStatus.RUNNING)]
        if not jobs:
            self._lease_missing_since.clear()
            return 0
        async with self.pool.pipeline(transaction=False) as pipe:
            for job in jobs:
                pipe.exists(ARQ_JOB_PREFIX + job.id)
                pipe.exists(IN_PROGRESS_PREFIX + job.id)
            present = await pipe.execute()
        now = time.monotonic()
        lost: list[str] = []
        for index, job in enumerate(jobs):
            queued_there, leased = present[2 * index], present[2 * index + 1]
            if job.status == JobStatus.QUEUED or running_too:
                if not queued_there:
                    lost.append(job.id)
                continue
            if queued_there or leased:
                self._lease_missing_since.pop(job.id, None)
            elif now - self._lease_missing_since.setdefault(job.id, now) >= LAPSED_LEASE_GRACE_S:
                log.warning("running job %s has no worker's lease any more; queueing it again", job.id)
                lost.append(job.id)
        unfinished = {job.id for job in jobs}
        for job_id in list(self._lease_missing_since):
            if job_id not in unfinished:
                del self._lease_missing_since[job_id]
        specs = {job.id: job.spec for job in jobs}
        requeued = 0
        kinds = {job.id: job.kind for job in jobs}
        for job_id in lost:
            self._lease_missing_since.pop(job_id, None)
            queue_name = arq_queue_of(kinds[job_id])  # each job back into its own queue
            enqueued = await self.pool.enqueue_job(ARQ_FUNCTION, specs[job_id], _job_id=job_id, _queue_name=queue_name)
            if enqueued is not None:
                requeued += 1
        if requeued:
            log.info("queued %d unfinished job(s) again that redis had lost", requeued)
            if self.wake_workers:
                await self.pool.publish(WAKE_CHANNEL, "requeue")
        return requeued

    async def _reconcile_forever(self) -> None:
        """:meth:`reconcile` every ``reconcile_interval_s`` while the client runs: a job lost by a
        redis restart is queued again within that time of redis being back, with no restart."""
        away = False
        while True:
            await asyncio.sleep(self.reconcile_interval_s)  # a timer, not a wait for something
            try:
                await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not away:
                    log.warning("reconciler: redis unavailable (%s); re-queueing once it is back", exc)
                away = True
                continue
            if away:
                log.info("reconciler: redis is reachable again; lost jobs are queued again")
            away = False

    async def close(self) -> None:
        if self._reconciler is not None:
            self._reconciler.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reconciler
            self._reconciler = None
        if self.pool is not None:
            await self.pool.aclose()
            self.pool = None

    async def enqueue(self, spec: JobSpec) -> None:
        await self.start()
        spec_json = spec.model_dump(mode="json")
        queue_name = arq_queue_of(spec.kind)
        if self.route_warm and queue_name == ARQ_QUEUES[IMAGES]:  # warmth matters to image turns
            try:
                worker = await routing.pin(self.pool, spec_json)
            except Exception as exc:  # routing is a hint: without it any worker takes the job
                log.warning("could not route job %s: %s", spec.job_id, exc)
            else:
                if worker is not None:
                    log.debug("job %s pinned to warm worker %s", spec.job_id, worker)
        job = await self.pool.enqueue_job(ARQ_FUNCTION, spec_json, _job_id=spec.job_id, _queue_name=queue_name)
        if job is None:
            log.info("job %s was already queued", spec.job_id)
        if self.wake_workers:
            await self.pool.publish(WAKE_CHANNEL, spec.job_id)
        position = await self.position(spec.job_id)
        await self.bus.publish(Queued.build(spec.job_id, position=position))

    async def cancel(self, job_id: str) -> bool:
        """Cancel a waiting job (removed from the queue: it never runs) or a running one.

        A running job is flagged in arq's abort set; its worker sets the engine's cancel flag,
        the engine stops at its next step and the worker records the cancel.
        """
        await self.start()
        queue_name = await self._queue_holding(job_id)
        in_queue = queue_name is not None
        running = bool(await self.pool.exists(IN_PROGRESS_PREFIX + job_id))
        if not in_queue and not running:
            return False
        # flag it first: if a worker picks it up in the meantime, it sees the flag before it runs
        await self.pool.zadd(ARQ_ABORT_KEY, {job_id: now_ms()})
        if self.wake_workers:
            await self.pool.publish(WAKE_CHANNEL, job_id)
        if not running and queue_name is not None and await self.pool.zrem(queue_name, job_id):
            await self.pool.delete(ARQ_JOB_PREFIX + job_id)
            await finish_job(self.store, self.bus, job_id, JobStatus.CANCELLED)
        return True

    async def position(self, job_id: str) -> int | None:
        await self.start()
        queue_name = await self._queue_holding(job_id)
        rank = await self.pool.zrank(queue_name, job_id) if queue_name is not None else None
        if rank is None:
            return None
        if await self.pool.exists(IN_PROGRESS_PREFIX + job_id):
            return None  # picked up: running, not waiting
        # arq keeps running jobs in the queue set until they finish: like the embedded queue's
        # position, the rank counts them as ahead
        return int(rank)

    async def _queue_holding(self, job_id: str) -> str | None:
        """The arq queue (redis key) that holds ``job_id``, if any."""
        async with self.pool.pipeline(transaction=False) as pipe:
            for name in ARQ_QUEUES.values():
                pipe.zscore(name, job_id)
            scores = await pipe.execute()
        return next((name for name, score in zip(ARQ_QUEUES.values(), scores, strict=True) if score is not None), None)


def redis_settings(url: str) -> Any:
    """arq's settings for ``url``: connecting retries for 30 s, and a command that meets a dropped
    connection is tried again on a new one (redis-py's Retry with exponential backoff)."""
    from arq.connections import RedisSettings
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff

    settings = RedisSettings.from_dsn(url)
    settings.conn_retries = 30
    settings.conn_retry_delay = 1
    settings.retry_on_timeout = True
    settings.retry = Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3)
    return settings


def now_ms() -> int:
    return int(time.time() * 1000)


def make_queue(redis_url: str | None, store: Store, runner_factory: Callable[[ProgressBus], Any]) -> JobQueue:
    """The arq queue when REDIS_URL is set, else the embedded in-process queue."""
    if redis_url:
        return ArqQueue(redis_url, store)
    return EmbeddedQueue(store, runner_factory)
