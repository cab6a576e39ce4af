"""Many machines: a front end and two ``persona-studio worker`` processes that share nothing but
redis, PostgreSQL and an S3 bucket (moto's server on loopback, through boto3): each has its own
BLOB_DIR (its cache of the bucket) and LORA_DIR. Warm routing sends a thread's edits to the worker
that ran its previous turn while it lives, and elsewhere within the grace once it is gone; a job
whose worker is killed mid-run runs again on the other one."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from bot.app import App, build_app
from bot.console import ConsoleFrontEnd
from commands.events import Images
from engine.jobs import routing
from engine.jobs.worker import HEARTBEAT_S, LEASE_S
from storage.models import JobStatus
from storage.settings import load_settings
from tests.conversation.helpers import errors, queued, run
from tests.queue.conftest import Recorder, WorkerProcess, console_for
from tests.s3_server import S3Bucket

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@dataclass
class Cluster:
    app: App
    workers: dict[str, WorkerProcess]  # by worker id
    recorder: Recorder
    console: ConsoleFrontEnd
    redis: aioredis.Redis
    dirs: dict[str, Path]  # front, and each worker's folder by worker id

    def worker_of(self, job_id: str, attempt: int = 1) -> str:
        running = [e for e in self.recorder.of(job_id) if e.state == "running" and e.attempt == attempt]
        assert running, f"job {job_id} never ran (attempt {attempt})"
        return running[0].worker

    async def thread_turn(self) -> object:
        thread_id = (await self.app.store.user("console", "ann")).current_thread_id
        return await self.app.store.get_turn((await self.app.store.get_thread(thread_id)).current_turn_id)


@contextlib.asynccontextmanager
async def cluster(tmp_path: Path, redis_url: str, postgres_url: str, bucket: S3Bucket) -> AsyncIterator[Cluster]:
    dirs = {name: tmp_path / name for name in ("front", "worker-a", "worker-b")}
    settings = load_settings(
        database_url=postgres_url,
        redis_url=redis_url,
        blob_dir=dirs["front"] / "blobs",
        lora_dir=dirs["front"] / "loras",
        engine_model="tiny",
        **bucket.settings(),
    )
    app = await build_app(settings, engine=None)  # the front end loads no engine
    workers = []
    for name in ("worker-a", "worker-b"):
        env = {**bucket.env(), "BLOB_DIR": str(dirs[name] / "blobs"), "LORA_DIR": str(dirs[name] / "loras")}
        dirs[name].mkdir(parents=True, exist_ok=True)
        workers.append(WorkerProcess(settings, dirs[name], extra_env=env))
    redis = aioredis.Redis.from_url(redis_url)
    recorder = await Recorder(app.conversation.queue.bus).start()
    try:
        for worker in workers:
            await worker.ready()
        ids = sorted(w.worker_id for w in workers)
        deadline = time.monotonic() + 30
        while await routing.live_workers(redis) != ids:  # both beat
            assert time.monotonic() < deadline, "workers never reported alive"
            await asyncio.sleep(0.05)
        dirs.update({w.worker_id: dirs[name] for w, name in zip(workers, ("worker-a", "worker-b"), strict=True)})
        yield Cluster(app, {w.worker_id: w for w in workers}, recorder, console_for(app, tmp_path), redis, dirs)
    finally:
        await recorder.stop()
        for worker in workers:
            worker.stop()
        await redis.aclose()
        await app.close()


def cached_blobs(root: Path) -> set[str]:
    return {p.name for p in (root / "blobs").glob("??/??/*") if p.suffix == ""}


async def test_a_whole_post_and_a_worker_killed_mid_job(
    tmp_path: Path, redis_url: str, postgres_url: str, s3_bucket: S3Bucket
) -> None:
    async with cluster(tmp_path, redis_url, postgres_url, s3_bucket) as c:
        ann = c.console
        await run(ann, "/persona create sweet Mia")
        await run(ann, "/post Mia count=2 sipping a latte in a café")
        first = await c.thread_turn()
        await run(ann, "hold the cup higher")
        edit = await c.thread_turn()
        assert (edit.kind, edit.parent_id) == ("edit", first.id) and len(edit.image_keys) == 2
        assert not errors(ann.actions)

        # every image is in the bucket, and the front end delivered from its own cache of it
        bucket = s3_bucket.client().list_objects_v2(Bucket=s3_bucket.bucket)
        in_bucket = {o["Key"].removeprefix("blobs/") for o in bucket["Contents"]}
        assert set(first.image_keys) | set(edit.image_keys) <= in_bucket
        delivered = [i for a in ann.actions if isinstance(a, Images) for i in a.images]
        assert delivered and all(Path(i.path).is_relative_to(c.dirs["front"]) for i in delivered)
        # no shared folder: each worker cached only what it made or read
        ran_on = {c.worker_of(j) for a in ann.actions if isinstance(a, Images) for j in [a.job_id]}
        assert ran_on <= set(c.workers)
        for worker_dir in ("worker-a", "worker-b"):
            assert cached_blobs(c.dirs[worker_dir]) <= in_bucket

        # kill -9 of the worker running a long edit: the other one runs it again
        await ann.send("/settings steps=60")
        job_id = queued(await ann.send("now on the terrace"))[0]
        running = await c.recorder.wait_for(lambda e: e.job_id == job_id and e.state == "running" and e.step >= 1)
        victim = c.workers[running.worker]
        os.kill(victim.process.pid, signal.SIGKILL)
        killed_at = time.time()
        victim.process.wait(timeout=10)
        assert (await c.app.store.get_job(job_id)).status == JobStatus.RUNNING
        rerun = await c.recorder.wait_for(
            lambda e: e.job_id == job_id and e.state == "running" and e.attempt == 2, LEASE_S + 30
        )
        survivor = next(w for w in c.workers if w != running.worker)
        assert rerun.worker == survivor
        delay = rerun.ts - killed_at
        print(f"re-run on the other worker {delay:.2f} s after kill -9 (lease {LEASE_S:.0f} s)")
        assert LEASE_S - HEARTBEAT_S - 2.0 <= delay < LEASE_S + 3.0, delay
        await ann.wait_job(job_id, limit_s=180)
        job = await c.app.store.get_job(job_id)
        assert job.status == JobStatus.DONE and job.attempts == 2 and job.delivered
        assert len([a for a in ann.actions if isinstance(a, Images) and a.job_id == job_id]) == 1
        terrace = await c.thread_turn()
        assert terrace.parent_id == edit.id and set(terrace.image_keys) <= {
            o["Key"].removeprefix("blobs/")
            for o in s3_bucket.client().list_objects_v2(Bucket=s3_bucket.bucket)["Contents"]
        }
        # the survivor read the edited image (whoever made it) through its own cache of the bucket
        assert edit.image_keys[0] in cached_blobs(c.dirs[survivor])


async def test_edits_of_a_thread_follow_its_warm_worker_until_it_dies(
    tmp_path: Path, redis_url: str, postgres_url: str, s3_bucket: S3Bucket
) -> None:
    async with cluster(tmp_path, redis_url, postgres_url, s3_bucket) as c:
        ann = c.console
        await run(ann, "/persona create sweet Mia")
        post = queued(await run(ann, "/post Mia a red dress on the terrace"))[0]
        warm = c.worker_of(post)
        edits = []
        for line in ("hold the cup higher", "now smiling", "same outfit, at the beach"):
            edits.append(queued(await run(ann, line))[0])
        assert [c.worker_of(j) for j in edits] == [warm] * 3
        counters = await routing.stats(c.redis)
        assert counters.get("warm", 0) >= 3 and counters.get("cold", 0) == 0, counters

        # the warm worker dies while idle: the next edit is pinned to it (its alive key has not
        # lapsed yet) and still starts on the other worker within the grace
        c.workers[warm].kill()
        sent = time.time()
        job_id = queued(await ann.send("now at night"))[0]
        started = await c.recorder.wait_for(lambda e: e.job_id == job_id and e.state == "running", 30)
        other = next(w for w in c.workers if w != warm)
        assert started.worker == other
        waited = started.ts - sent
        print(f"edit after the warm worker died started {waited:.2f} s later (grace {routing.GRACE_S} s)")
        assert waited < routing.GRACE_S + 1.0, waited
        await ann.wait_job(job_id, limit_s=120)
        # and the thread is warm on the survivor now
        job_id = queued(await run(ann, "closer, please"))[0]
        assert c.worker_of(job_id) == other
        assert not errors(ann.actions)
