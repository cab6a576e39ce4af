"""The arq GPU worker: ``persona-studio worker``.

One pipeline per process, loaded once at start-up; one job at a time per queue. Failed jobs are
retried with backoff; on the last try they are marked failed and the user is told.

Lease: arq marks a job in progress with a key that lives ``job_timeout + 10 s`` and never renews
it. We keep the generous timeout (a 4-image post on a small GPU takes minutes) but PEXPIRE that
key to :data:`LEASE_S` every :data:`HEARTBEAT_S` while the job runs, so when a worker is killed
its job becomes runnable for another worker within about :data:`LEASE_S` seconds. The engine runs
in a thread, so the heartbeat keeps beating while a step computes.

Waking: instead of arq's 0.5 s poll, :class:`StudioWorker` waits between polls on a pub/sub message
published on enqueue and cancel (polling at least every :data:`IDLE_POLL_S`): a job starts within ms.

Cancel: arq's own abort cancels the job's asyncio task, which cannot tell an abort from a
shutdown. :class:`StudioWorker` reads arq's abort set itself and sets the running job's cancel
flag instead: the engine stops at its next step and the cancel is recorded. A task cancelled by
a shutdown is not recorded as cancelled: arq runs the job again.

Redis restarts: a failed poll is logged and tried again; if arq's loop still gives up, it is
started again without reloading the pipeline. Queues (engine.jobs.queues): one arq loop per queue
of WORKER_QUEUES, sharing the process's engine; a video-only worker loads no image pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

from redis.backoff import ExponentialBackoff

from engine.jobs import failures, routing
from engine.jobs.core_share import CoreShare, host_workers
from engine.jobs.outcomes import finish_job
from engine.jobs.progress import RedisBus
from engine.jobs.queue import (
    ARQ_ABORT_KEY,
    ARQ_FUNCTION,
    IN_PROGRESS_PREFIX,
    WAKE_CHANNEL,
    now_ms,
    redis_settings,
)
from engine.jobs.queues import ARQ_QUEUES, IMAGES, TRAINING, queue_of_spec
from engine.jobs.runner import JobRunner
from engine.jobs.worker_health import HEALTH_CHECK_INTERVAL_S, MetricsReports
from engine.metrics import publish_worker_metrics
from storage.blobs import open_blob_store
from storage.db import Database
from storage.models import JobStatus
from storage.repository import Store
from storage.settings import Settings
from storage.workspace_keys import configured_homes

log = logging.getLogger(__name__)

JOB_TIMEOUT_S = 3600  # a job running longer is stopped and marked failed
ARQ_TIMEOUT_S = JOB_TIMEOUT_S + 60  # arq's own timeout: a backstop behind ours
MAX_TRIES = 3
LEASE_S = 10.0
HEARTBEAT_S = 3.0
IDLE_POLL_S = 0.5  # poll at least this often without a wake message (deferred retries, lost wakes)
OUTAGE_RETRY_S = 1.0  # wait between polls while redis is unreachable
RETRY_BACKOFF_S = (2.0, 10.0, 30.0)
#: waits between attempts to subscribe to WAKE_CHANNEL again (0.05 s doubling up to OUTAGE_RETRY_S)
WAKE_BACKOFF = ExponentialBackoff(cap=OUTAGE_RETRY_S, base=0.05)
ABORT_MAX_AGE_MS = 3600_000  # abort requests for jobs no worker runs are dropped after this
#: names this worker in its progress events ("running" tells which worker has the job)
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"


class WorkerState:
    """What a worker process keeps between jobs (and between arq restarts)."""

    def __init__(
        self,
        settings: Settings,
        engine: Any | None = None,
        worker_id: str = WORKER_ID,
        queues: Sequence[str] | None = None,
    ) -> None:
        self.settings = settings
        self.worker_id = worker_id
        #: the queues this process takes jobs from (WORKER_QUEUES): one arq worker loop each
        self.queues = tuple(queues or settings.worker_queue_list)
        self.db = Database(settings.database_url)
        self.store = Store(self.db)
        self.blobs = open_blob_store(settings)
        self._engine = engine
        #: cancel flags of the jobs running here, by job id (set when arq's abort set names them)
        self.cancel_flags: dict[str, threading.Event] = {}
        #: this worker's share of the host's cores (torch threads), counted from the alive keys
        self.cores = CoreShare(settings, worker_id)
        self.metrics = MetricsReports(WORKER_ID)  # read by the web process's /metrics

    async def prepare(self) -> None:
        await self.db.upgrade(
            home_workspaces=configured_homes(self.settings.wecom_corp_id, self.settings.discord_guild_ids)
        )
        log.info("blob store: %s", await asyncio.to_thread(self.blobs.check))  # BlobStoreUnavailable: no start
        if self._engine is None:
            from engine.config import EngineConfig
            from engine.render.engine import Engine

            config = EngineConfig.from_settings(self.settings)
            if IMAGES not in self.queues and TRAINING not in self.queues:  # a clip worker renders no stills
                config = dataclasses.replace(config, load_images=False)
            self._engine = Engine(config, self.blobs)
            log.info("loading the engine for the queues %s (images: %s)", ",".join(self.queues), config.load_images)
            await asyncio.to_thread(self._engine.load)

    @property
    def engine(self) -> Any:
        assert self._engine is not None, "prepare() first"
        return self._engine


async def run_job(ctx: dict[str, Any], spec_json: dict[str, Any]) -> dict[str, Any] | None:
    """The arq job function: plain JSON in, plain JSON out."""
    from arq import Retry

    state: WorkerState = ctx["state"]
    redis = ctx["redis"]
    job_id = ctx["job_id"]
    bus = RedisBus(redis, worker=state.worker_id)
    # between jobs, in the engine's thread: the host's worker count may have changed
    runner = JobRunner(state.engine, state.store, bus, in_engine_thread=state.cores.apply)
    cancel = threading.Event()
    state.cancel_flags[job_id] = cancel
    heartbeat = asyncio.create_task(_heartbeat(redis, job_id))
    final = ctx["job_try"] >= MAX_TRIES
    deadline: asyncio.Timeout | None = None
    try:
        try:
            if queue_of_spec(spec_json) == IMAGES:  # warmth is an image turn's: clips and training leave it
                warm = await routing.record_start(redis, state.worker_id, spec_json)
                log.info("job %s starts (thread %s, warm here: %s)", job_id, spec_json.get("thread_id"), warm)
        except Exception as exc:  # routing is a hint: a redis blip must not stop the job
            log.warning("could not record where job %s runs: %s", job_id, exc)
        if await redis.zscore(ARQ_ABORT_KEY, job_id) is not None:
            cancel.set()  # cancelled while it was being picked up: stop at the first step
            await redis.zrem(ARQ_ABORT_KEY, job_id)
        async with asyncio.timeout(JOB_TIMEOUT_S) as deadline:
            result = await runner.execute(spec_json, cancel, final_attempt=final)
    except TimeoutError:
        if deadline is None or not deadline.expired():
            raise Retry(defer=_backoff(ctx["job_try"])) from None
        log.error("job %s ran longer than %d s; giving up", job_id, JOB_TIMEOUT_S)
        await finish_job(state.store, bus, job_id, JobStatus.FAILED, error=failures.timed_out(JOB_TIMEOUT_S).user_text)
        return None
    except asyncio.CancelledError:
        raise  # worker shutting down: arq runs the job again
    except Exception as exc:
        raise Retry(defer=_backoff(ctx["job_try"])) from exc
    finally:
        state.cancel_flags.pop(job_id, None)
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeat
        await state.metrics.report(redis)
    return result.model_dump(mode="json") if result is not None else None


def _backoff(job_try: int) -> float:
    return RETRY_BACKOFF_S[min(job_try, len(RETRY_BACKOFF_S)) - 1]


async def _heartbeat(redis: Any, job_id: str) -> None:
    """Renew the job's lease; SET, not PEXPIRE: a redis restarted empty gets the key back, so the
    front end's reconciler sees the job is held (engine.jobs.queue.ArqQueue.reconcile)."""
    key = IN_PROGRESS_PREFIX + job_id
    while True:
        try:
            await redis.set(key, b"1", px=int(LEASE_S * 1000))
        except Exception as exc:  # a redis blip must not kill the job
            log.warning("lease heartbeat for %s failed: %s", job_id, exc)
        await asyncio.sleep(HEARTBEAT_S)


def _worker_class() -> type:
    from arq.worker import Worker

    class StudioWorker(Worker):  # type: ignore[misc]
        """arq's worker, woken by pub/sub, surviving redis outages, cancelling through flags."""

        def __init__(
            self,
            *args: Any,
            cancel_flags: dict[str, threading.Event],
            worker_id: str,
            cores: CoreShare | None = None,
            **kwargs: Any,
        ) -> None:
            super().__init__(*args, **kwargs)
            self.cancel_flags = cancel_flags
            self.worker_id = worker_id
            self.cores = cores
            self._alive_task: asyncio.Task[None] | None = None
            self.wake = asyncio.Event()
            self._wake_task: asyncio.Task[None] | None = None
            self._redis_lost_at: float | None = None

        async def _poll_iteration(self) -> None:
            if self._wake_task is None:
                self._wake_task = asyncio.create_task(self._listen_wake(), name="arq-wake")
                self._alive_task = asyncio.create_task(self._beat_alive(), name="arq-alive")
            self.wake.clear()  # a wake that arrives during this poll makes the next one start at once
            try:
                await super()._poll_iteration()
                await self._abort_flagged()
            except Exception as exc:
                if not _is_connection_error(exc):
                    raise
                if self._redis_lost_at is None:
                    self._redis_lost_at = time.monotonic()
                    log.warning("lost redis (%s); retrying every %.0f s", exc, OUTAGE_RETRY_S)
                await asyncio.sleep(OUTAGE_RETRY_S)
                return
            if self._redis_lost_at is not None:
                log.info("redis is back after %.1f s", time.monotonic() - self._redis_lost_at)
                self._redis_lost_at = None
                self._last_health_check = 0  # a restarted redis lost the health-check key
                self.wake.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), IDLE_POLL_S)

        async def record_health(self) -> None:
            checked = self._last_health_check
            await super().record_health()
            if self._last_health_check != checked:  # recorded now: report the metrics with it
                await publish_worker_metrics(self.pool, WORKER_ID)

        def _release_sem_dec_counter_on_complete(self) -> None:
            super()._release_sem_dec_counter_on_complete()
            self.wake.set()  # a job finished: pick the next one now

        async def start_jobs(self, job_ids: list[bytes]) -> None:
            """arq's start, on the jobs routing lets this worker take (engine.jobs.routing)."""
            limit = self.max_jobs - self.job_counter
            await super().start_jobs(await routing.claimable(self.pool, self.worker_id, job_ids, limit))

        async def _beat_alive(self) -> None:
            while True:
                try:
                    await routing.beat(self.pool, self.worker_id)
                    if self.cores is not None:
                        self.cores.observe(await host_workers(self.pool, self.worker_id))
                        if not self.cancel_flags:  # idle: no job computes under the change
                            self.cores.apply()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.debug("alive beat failed (%s)", exc)
                await asyncio.sleep(routing.BEAT_S)

        async def _abort_flagged(self) -> None:
            """Set the cancel flag of each running job named in arq's abort set."""
            if not self.cancel_flags:
                return
            raw = await self.pool.zrange(ARQ_ABORT_KEY, 0, -1)
            hits = [job_id for job_id in (r.decode() for r in raw) if job_id in self.cancel_flags]
            for job_id in hits:
                log.info("cancelling job %s", job_id)
                self.cancel_flags[job_id].set()
            if hits:
                await self.pool.zrem(ARQ_ABORT_KEY, *hits)
            await self.pool.zremrangebyscore(ARQ_ABORT_KEY, "-inf", now_ms() - ABORT_MAX_AGE_MS)

        async def _listen_wake(self) -> None:
            failures = 0
            while True:
                pubsub = self.pool.pubsub(ignore_subscribe_messages=True)
                try:
                    await pubsub.subscribe(WAKE_CHANNEL)
                    failures = 0
                    self.wake.set()  # a wake may have been missed while we were not subscribed
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self.wake.set()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.debug("wake subscription lost (%s); subscribing again", exc)
                finally:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()
                failures += 1
                await asyncio.sleep(WAKE_BACKOFF.compute(failures))

        async def close(self) -> None:
            for task in (self._wake_task, self._alive_task):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            self._wake_task = self._alive_task = None
            with contextlib.suppress(Exception):
                await routing.leave(self.pool, self.worker_id)
            await super().close()

    return StudioWorker


def worker_options(state: WorkerState, *, burst: bool = False, queue: str = IMAGES) -> dict[str, Any]:
    from arq import func

    async def on_startup(ctx: dict[str, Any]) -> None:
        ctx["state"] = state

    return {
        "functions": [func(run_job, name=ARQ_FUNCTION, max_tries=MAX_TRIES, timeout=ARQ_TIMEOUT_S)],
        "redis_settings": redis_settings(state.settings.redis_url or ""),
        "on_startup": on_startup,
        "queue_name": ARQ_QUEUES[queue],  # its health check key follows it
        "max_jobs": 1,
        "job_timeout": ARQ_TIMEOUT_S,
        "poll_delay": 0,  # StudioWorker waits for a wake message (or IDLE_POLL_S) between polls
        "allow_abort_jobs": False,  # StudioWorker cancels through the engine's flag instead
        "retry_jobs": True,
        "health_check_interval": HEALTH_CHECK_INTERVAL_S,
        "keep_result": 3600,
        "burst": burst,
        "handle_signals": False,
        "cancel_flags": state.cancel_flags,
        "worker_id": state.worker_id,
        "cores": state.cores,
    }


def make_worker(state: WorkerState, *, burst: bool = False, queue: str = IMAGES) -> Any:
    return _worker_class()(**worker_options(state, burst=burst, queue=queue))


async def serve(state: WorkerState, *, burst: bool = False) -> None:
    """Run one arq worker loop per queue of ``state.queues`` until stopped. The loops share the
    process's engine: their jobs take turns on the model (a clip lends it between its steps)."""
    await state.prepare()
    async with asyncio.TaskGroup() as group:
        for queue in state.queues:
            group.create_task(_serve_queue(state, queue, burst), name=f"arq-worker-{queue}")


async def _serve_queue(state: WorkerState, queue: str, burst: bool) -> None:
    """Run arq on ``queue`` until stopped; start it again if it gives up on redis."""
    while True:
        worker = make_worker(state, burst=burst, queue=queue)
        try:
            await worker.main()
            return  # burst mode finished
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not _is_connection_error(exc):
                raise
            log.warning("lost redis (%s); starting the worker loop again", exc)
            await asyncio.sleep(OUTAGE_RETRY_S)  # back off while redis comes back
        finally:
            with contextlib.suppress(Exception):
                await worker.close()


def _is_connection_error(exc: BaseException) -> bool:
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return isinstance(exc, RedisConnectionError | RedisTimeoutError | ConnectionError | OSError)


def run_worker(settings: Settings, *, burst: bool = False) -> int:
    if not settings.redis_url:
        print("persona-studio worker: set REDIS_URL (without it the front ends run an embedded worker)")
        return 2

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        with contextlib.suppress(NotImplementedError):  # SIGTERM: stop; arq hands a running job back
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        await serve(WorkerState(settings), burst=burst)

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        return 130
    except asyncio.CancelledError:
        return 0
    return 0
