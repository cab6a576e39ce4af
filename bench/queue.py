"""Benchmark the job queues with a no-op engine: how long a job waits to start, and what the
queue and the storage bookkeeping add to every job.

    python bench/queue.py                    # 200 jobs on each queue, a table
    python bench/queue.py --jobs 500 --json  # as JSON
    python bench/queue.py --redis-url redis://127.0.0.1:6379/15   # an existing redis (db is flushed)

Both queues run here, in this one process, against a SQLite database in a temporary folder:

* embedded: :class:`engine.jobs.queue.EmbeddedQueue` (a background task, :class:`LocalBus`);
* arq: :func:`engine.jobs.worker.serve` as a task of this process, jobs through a redis-server (started
  on a free port unless ``--redis-url``), events over redis pub/sub. ``arq-no-wake`` is the same
  with the client's wake message turned off: the worker then finds jobs by polling
  (``IDLE_POLL_S``), as plain arq does with its poll delay.

Jobs run one after another (the next is queued once the previous one's "done" event arrived), so
the figures are latencies, not throughput. Per job:

* enqueue→start: from the ``queue.enqueue`` call to the "running" event's timestamp (written by
  ``JobRunner.execute`` after ``Store.start_job``);
* overhead: from the ``enqueue`` call to the "done" event's arrival, minus the engine's own time
  (measured around ``NoopEngine.run``): queueing, pick-up, storage writes and the event trip.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is called queue.py: its folder must not shadow the standard library's ``queue``.
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from typing import Any  # noqa: E402

from engine.jobs.events import AnyJobEvent, Done  # noqa: E402
from engine.jobs.noop_engine import NoopEngine  # noqa: E402
from engine.jobs.progress import ProgressBus  # noqa: E402
from engine.jobs.runner import JobRunner  # noqa: E402
from engine.specs import JobKind, JobSpec, PersonaSpec, RenderParams  # noqa: E402
from storage.db import Database  # noqa: E402
from storage.repository import Store  # noqa: E402


def _spec() -> JobSpec:
    return JobSpec(
        job_id=uuid.uuid4().hex,
        kind=JobKind.GENERATE,
        persona=PersonaSpec(archetype="sweet"),
        params=RenderParams(steps=1, width=64, height=64),
    )


class Collector:
    """Every event of the bus, with its arrival time; an asyncio.Event per finished job."""

    def __init__(self, bus: ProgressBus) -> None:
        self.bus = bus
        self.running: dict[str, float] = {}
        self.done_at: dict[str, float] = {}
        self.finished: dict[str, asyncio.Event] = {}
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for event in self.bus.subscribe():
            self._on(event)

    def _on(self, event: AnyJobEvent) -> None:
        job_id = event.job_id
        if event.state == "running" and job_id not in self.running:
            self.running[job_id] = event.ts
        elif event.state in ("done", "failed", "cancelled"):
            self.done_at[job_id] = time.time()
            self.finished.setdefault(job_id, asyncio.Event()).set()

    async def wait(self, job_id: str, limit_s: float = 30.0) -> None:
        await asyncio.wait_for(self.finished.setdefault(job_id, asyncio.Event()).wait(), limit_s)

    async def live(self) -> None:
        """Return once the subscription receives events (redis subscribes asynchronously)."""
        probe = f"probe-{uuid.uuid4().hex}"
        for _ in range(100):
            await self.bus.publish(Done.build(probe))
            with contextlib.suppress(TimeoutError):
                await self.wait(probe, 0.1)
                return
        raise RuntimeError("bus subscription never became live")

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task


async def _measure(queue: Any, store: Store, engine: NoopEngine, jobs: int, warmup: int) -> dict[str, Any]:
    collector = Collector(queue.bus)
    await collector.live()
    start_ms: list[float] = []
    overhead_ms: list[float] = []
    try:
        for index in range(warmup + jobs):
            spec = _spec()
            await store.create_job(
                spec.job_id,
                str(spec.kind),
                spec.model_dump(mode="json"),
                user_id=None,
                thread_id=None,
                platform="bench",
            )
            enqueued = time.time()
            await queue.enqueue(spec)
            await collector.wait(spec.job_id)
            if index < warmup:
                continue
            start_ms.append((collector.running[spec.job_id] - enqueued) * 1000)
            total = collector.done_at[spec.job_id] - enqueued
            overhead_ms.append((total - engine.seconds[spec.job_id]) * 1000)
    finally:
        await collector.close()
    return {"jobs": jobs, "enqueue_to_start_ms": _stats(start_ms), "overhead_ms": _stats(overhead_ms)}


def _stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))], 2)

    return {"p50": pct(50), "p99": pct(99), "mean": round(statistics.fmean(values), 2), "max": round(ordered[-1], 2)}


async def bench_embedded(root: Path, jobs: int, warmup: int) -> dict[str, Any]:
    from engine.jobs.queue import EmbeddedQueue

    db = Database(f"sqlite+aiosqlite:///{root / 'embedded.db'}")
    await db.upgrade()
    store = Store(db)
    engine = NoopEngine()
    queue = EmbeddedQueue(store, lambda bus: JobRunner(engine, store, bus))
    await queue.start()
    try:
        return await _measure(queue, store, engine, jobs, warmup)
    finally:
        await queue.close()
        await db.dispose()


async def bench_arq(root: Path, redis_url: str, jobs: int, warmup: int, *, wake: bool) -> dict[str, Any]:
    import redis.asyncio as aioredis

    from engine.jobs.queue import ArqQueue
    from engine.jobs.worker import WorkerState, serve
    from storage.settings import load_settings

    client = aioredis.Redis.from_url(redis_url)
    await client.flushdb()
    await client.aclose()
    name = "arq-wake" if wake else "arq-no-wake"
    settings = load_settings(
        database_url=f"sqlite+aiosqlite:///{root / f'{name}.db'}",
        blob_dir=root / "blobs",
        lora_dir=root / "loras",
        redis_url=redis_url,
    )
    engine = NoopEngine()
    state = WorkerState(settings, engine=engine)
    worker = asyncio.create_task(serve(state))
    db = Database(settings.database_url)
    await db.upgrade()
    store = Store(db)
    queue = ArqQueue(redis_url, store)
    queue.wake_workers = wake
    await queue.start()
    try:
        return await _measure(queue, store, engine, jobs, warmup)
    finally:
        await queue.close()
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
        await db.dispose()
        await state.db.dispose()


@contextlib.contextmanager
def _redis_server() -> Any:
    binary = shutil.which("redis-server")
    if not binary:
        raise SystemExit("bench/queue.py: no redis-server on PATH; pass --redis-url")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    folder = tempfile.mkdtemp(prefix="bench-redis-")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", folder],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit("bench/queue.py: redis-server did not start") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


async def main_async(args: argparse.Namespace, redis_url: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-queue-") as folder:
        root = Path(folder)
        results = {"embedded": await bench_embedded(root, args.jobs, args.warmup)}
        results["arq"] = await bench_arq(root, redis_url, args.jobs, args.warmup, wake=True)
        if not args.skip_no_wake:
            results["arq-no-wake"] = await bench_arq(root, redis_url, args.no_wake_jobs, args.warmup, wake=False)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--no-wake-jobs", type=int, default=50, help="jobs for the arq-no-wake run (it is slow)")
    parser.add_argument("--skip-no-wake", action="store_true")
    parser.add_argument("--redis-url", default=None, help="an existing redis (its database is flushed)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with contextlib.ExitStack() as stack:
        redis_url = args.redis_url or stack.enter_context(_redis_server())
        results = asyncio.run(main_async(args, redis_url))
    meta = {"python": sys.version.split()[0], "cpus": os.cpu_count(), "worker": "same process (asyncio task)"}
    if args.json:
        print(json.dumps({"meta": meta, "results": results}, indent=2))
        return 0
    print(f"{'queue':<12} {'jobs':>5}  {'start p50':>9} {'p99':>8}  {'overhead p50':>12} {'p99':>8}   (ms)")
    for name, r in results.items():
        s, o = r["enqueue_to_start_ms"], r["overhead_ms"]
        print(f"{name:<12} {r['jobs']:>5}  {s['p50']:>9} {s['p99']:>8}  {o['p50']:>12} {o['p99']:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
