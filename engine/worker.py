"""The arq GPU worker: ``persona-studio worker``.

One pipeline per process, loaded once at start-up; one job at a time (``max_jobs=1``). Failed
jobs are retried with backoff; on the last try they are marked failed and the user is told.

Lease: arq marks a job in progress with a key that lives ``job_timeout + 10 s`` and never renews
it. We keep the generous timeout (a 4-image post on a small GPU takes minutes) but PEXPIRE that
key to :data:`LEASE_S` every :data:`HEARTBEAT_S` while the job runs, so when a worker is killed
its job becomes runnable for another worker within about :data:`LEASE_S` seconds. The engine runs
in a thread, so the heartbeat keeps beating while a step computes.

Redis restarts: the redis client reconnects with retries; if arq's loop still gives up, the
worker loop starts arq again without reloading the pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from engine.jobs import JobRunner
from engine.progress import RedisBus
from engine.queue import ARQ_FUNCTION, redis_settings
from storage.blobs import BlobStore
from storage.db import Database
from storage.repository import Store
from storage.settings import Settings

log = logging.getLogger(__name__)

JOB_TIMEOUT_S = 3600
MAX_TRIES = 3
LEASE_S = 10.0
HEARTBEAT_S = 3.0
POLL_DELAY_S = 0.02  # arq's default 0.5 s poll adds up to half a second to every turn
RETRY_BACKOFF_S = (2.0, 10.0, 30.0)


class WorkerState:
    """What a worker process keeps between jobs (and between arq restarts)."""

    def __init__(self, settings: Settings, engine: Any | None = None) -> None:
        self.settings = settings
        self.db = Database(settings.database_url)
        self.store = Store(self.db)
        self.blobs = BlobStore(settings.blob_dir)
        self._engine = engine

    async def prepare(self) -> None:
        await self.db.upgrade()
        if self._engine is None:
            from engine.runner import Engine

            self._engine = Engine.from_settings(self.settings, self.blobs)
            log.info("loading the pipeline (%s)", self.settings.engine_model)
            await asyncio.to_thread(self._engine.load)

    @property
    def engine(self) -> Any:
        assert self._engine is not None, "prepare() first"
        return self._engine


async def run_job(ctx: dict[str, Any], spec_json: dict[str, Any]) -> dict[str, Any] | None:
    """The arq job function: plain JSON in, plain JSON out."""
    from arq import Retry

    state: WorkerState = ctx["state"]
    runner = JobRunner(state.engine, state.store, RedisBus(ctx["redis"]))
    job_id = ctx["job_id"]
    heartbeat = asyncio.create_task(_heartbeat(ctx["redis"], job_id))
    final = ctx["job_try"] >= MAX_TRIES
    try:
        result = await runner.execute(spec_json, final_attempt=final)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        delay = RETRY_BACKOFF_S[min(ctx["job_try"], len(RETRY_BACKOFF_S)) - 1]
        raise Retry(defer=delay) from exc
    finally:
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeat
    return result.model_dump(mode="json") if result is not None else None


async def _heartbeat(redis: Any, job_id: str) -> None:
    key = f"arq:in-progress:{job_id}"
    while True:
        try:
            await redis.pexpire(key, int(LEASE_S * 1000))
        except Exception as exc:  # a redis blip must not kill the job
            log.warning("lease heartbeat for %s failed: %s", job_id, exc)
        await asyncio.sleep(HEARTBEAT_S)


def worker_options(state: WorkerState, *, burst: bool = False) -> dict[str, Any]:
    from arq import func

    async def on_startup(ctx: dict[str, Any]) -> None:
        ctx["state"] = state

    return {
        "functions": [func(run_job, name=ARQ_FUNCTION, max_tries=MAX_TRIES, timeout=JOB_TIMEOUT_S)],
        "redis_settings": redis_settings(state.settings.redis_url or ""),
        "on_startup": on_startup,
        "max_jobs": 1,
        "job_timeout": JOB_TIMEOUT_S,
        "poll_delay": POLL_DELAY_S,
        "allow_abort_jobs": True,
        "retry_jobs": True,
        "health_check_interval": 30,
        "keep_result": 3600,
        "burst": burst,
        "handle_signals": False,
    }


async def serve(state: WorkerState, *, burst: bool = False) -> None:
    """Run arq until stopped; start it again after a redis outage."""
    from arq.worker import Worker

    await state.prepare()
    while True:
        worker = Worker(**worker_options(state, burst=burst))
        try:
            await worker.main()
            return  # burst mode finished
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not _is_connection_error(exc):
                raise
            log.warning("lost redis (%s); starting the worker loop again", exc)
            await asyncio.sleep(1.0)  # back off while redis comes back
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
    try:
        asyncio.run(serve(WorkerState(settings), burst=burst))
    except KeyboardInterrupt:
        return 130
    return 0
