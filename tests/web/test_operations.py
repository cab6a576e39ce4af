"""Operators' endpoints against real services: /metrics parsed with prometheus-client's parser
(job counters rise after a job; a real arq worker's metrics arrive through redis), /readyz
failing when the database or redis is down or no worker beats, /healthz."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine.jobs.worker_health import METRICS_EVERY_S
from storage.blobs import BlobStore
from tests.conversation.helpers import run
from tests.queue.conftest import wait_health, worker_task
from tests.s3_server import S3Bucket
from tests.services import RedisServer, postgres_database
from tests.web.conftest import PaintingEngine, Studio, make_posts, start_studio, stop_studio


async def scrape(http: aiohttp.ClientSession, studio: Studio) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    async with http.get(f"{studio.base}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_count_jobs_events_and_the_queue(studio: Studio, http: aiohttp.ClientSession) -> None:
    before = await scrape(http, studio)
    await make_posts(studio, "ann", "mia", ["latte on a balcony"])
    await run(studio.console("ann"), "hold the latte higher")
    after = await scrape(http, studio)

    def rise(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert rise("persona_studio_jobs_total", kind="create_persona", outcome="done") == 1
    assert rise("persona_studio_jobs_total", kind="generate", outcome="done") == 1
    assert rise("persona_studio_jobs_total", kind="edit", outcome="done") == 1
    assert rise("persona_studio_job_run_seconds_count", kind="edit") == 1
    assert rise("persona_studio_job_wait_seconds_count", kind="generate") == 1
    assert rise("persona_studio_identity_score_count") == 2  # the post's and the edit's image
    assert rise("persona_studio_inbound_events_total", platform="console", kind="command") == 2
    assert rise("persona_studio_inbound_events_total", platform="console", kind="message") == 1
    assert rise("persona_studio_deliveries_total", platform="console") == 3
    assert value(after, "persona_studio_queue_jobs", status="queued") == 0
    assert ("persona_studio_queue_jobs", frozenset({("status", "running")})) in after


async def test_a_workers_metrics_reach_the_web_process_through_redis(
    tmp_path: Path, redis_url: str, http: aiohttp.ClientSession
) -> None:
    from engine.jobs.worker import WORKER_ID

    blobs = BlobStore(tmp_path / "blobs")
    studio = await start_studio(tmp_path, engine=PaintingEngine(blobs=blobs), redis_url=redis_url)
    try:
        async with http.get(f"{studio.base}/readyz") as response:
            assert response.status == 503  # no worker yet
            body = await response.json()
            assert body["failed"] == ["worker"] and body["checks"]["queue"] == "ok (redis)"
        done = {"kind": "generate", "outcome": "done"}
        before = value(await scrape(http, studio), "persona_studio_jobs_total", **done)
        async with worker_task(studio.settings, studio.engine):
            await wait_health(redis_url)
            await make_posts(studio, "ann", "mia", ["latte on a balcony"])

            # (the worker runs in this process here: its registry is this one, so it counts on from
            # this process's count; a worker process of its own starts at 0). Jobs that end within
            # METRICS_EVERY_S of the last report share the next one: it comes that much later.
            async def jobs_done() -> float:
                return value(await scrape(http, studio), "persona_studio_jobs_total", **done, worker=WORKER_ID)

            deadline = asyncio.get_running_loop().time() + 10 * METRICS_EVERY_S
            while await jobs_done() < before + 1:  # the report is in redis
                assert asyncio.get_running_loop().time() < deadline, "the worker's report never came"
                await asyncio.sleep(0.1)
            samples = await scrape(http, studio)
            assert value(samples, "persona_studio_jobs_total", **done, worker=WORKER_ID) == before + 1
            assert value(samples, "persona_studio_workers") == 1
            async with http.get(f"{studio.base}/readyz") as response:
                assert response.status == 200, await response.text()
                assert (await response.json())["checks"]["worker"].startswith("ok")
    finally:
        await stop_studio(studio)


async def test_readyz_fails_when_redis_is_down(
    tmp_path: Path, fresh_redis: RedisServer, http: aiohttp.ClientSession
) -> None:
    studio = await start_studio(tmp_path, redis_url=fresh_redis.url)
    try:
        fresh_redis.stop()
        async with http.get(f"{studio.base}/readyz") as response:
            assert response.status == 503
            body = await response.json()
        assert "queue" in body["failed"] and body["checks"]["queue"].startswith("redis unreachable")
        assert body["checks"]["database"] == "ok"
        async with http.get(f"{studio.base}/healthz") as response:  # the process itself is fine
            assert response.status == 200
    finally:
        fresh_redis.start()
        await stop_studio(studio)


@pytest.mark.postgres
async def test_readyz_fails_when_the_database_is_down(
    tmp_path: Path, postgres_available: str, http: aiohttp.ClientSession
) -> None:
    async with postgres_database() as url:
        studio = await start_studio(tmp_path, database_url=url)
        async with http.get(f"{studio.base}/readyz") as response:
            assert response.status == 200, await response.text()
            assert (await response.json())["checks"]["queue"].startswith("embedded")
    # the database is gone now (dropped, its connections closed)
    try:
        async with http.get(f"{studio.base}/readyz") as response:
            assert response.status == 503
            body = await response.json()
        assert body["failed"] == ["database"] and body["checks"]["database"].startswith("unreachable")
        samples = await scrape(http, studio)  # the process's own metrics still go out, the queue's do not
        assert ("persona_studio_queue_jobs", frozenset({("status", "queued")})) not in samples
    finally:
        await studio.web.stop()
        await studio.app.db.dispose()


def test_metrics_merge_labels_each_workers_samples() -> None:
    from bot.web.ops import merged_exposition

    worker_text = (
        "# HELP persona_studio_jobs_total Jobs\n# TYPE persona_studio_jobs_total counter\n"
        'persona_studio_jobs_total{kind="edit",outcome="done"} 3.0\n'
        "# HELP persona_studio_workers w\n# TYPE persona_studio_workers gauge\npersona_studio_workers 0.0\n"
    )
    local = list(
        text_string_to_metric_families(
            '# TYPE persona_studio_jobs counter\npersona_studio_jobs_total{kind="edit",outcome="done"} 1.0\n'
        )
    )
    text = merged_exposition(local, {"gpu-1:42": worker_text}).decode()
    samples = {
        (s.name, frozenset(s.labels.items())): s.value for f in text_string_to_metric_families(text) for s in f.samples
    }
    assert samples[("persona_studio_jobs_total", frozenset({("kind", "edit"), ("outcome", "done")}))] == 1.0
    key = ("persona_studio_jobs_total", frozenset({("kind", "edit"), ("outcome", "done"), ("worker", "gpu-1:42")}))
    assert samples[key] == 3.0
    assert not any(name == "persona_studio_workers" for name, _ in samples)  # web-only gauges stay the web's
    assert (
        text.count("# TYPE persona_studio_jobs_total counter") == 1
        or text.count("# TYPE persona_studio_jobs counter") == 1
    )


async def test_readyz_and_start_up_check_the_s3_bucket(
    tmp_path: Path, s3_bucket: S3Bucket, http: aiohttp.ClientSession
) -> None:
    """Issue 20 item 9: /readyz says 503 naming the blob store when the bucket is gone; a start
    on a bucket that does not answer is refused, saying which."""
    from storage.blobs import BlobStoreUnavailable

    studio = await start_studio(tmp_path, **s3_bucket.settings())
    try:
        async with http.get(f"{studio.base}/readyz") as response:
            assert response.status == 200, await response.text()
            assert (await response.json())["checks"]["blobs"].startswith("ok: bucket")
        s3_bucket.client().delete_bucket(Bucket=s3_bucket.bucket)  # (empty: nothing stored yet)
        async with http.get(f"{studio.base}/readyz") as response:
            assert response.status == 503
            body = await response.json()
        assert body["failed"] == ["blobs"] and "does not exist" in body["checks"]["blobs"]
    finally:
        await stop_studio(studio)
    with pytest.raises(BlobStoreUnavailable, match=s3_bucket.bucket):
        await start_studio(tmp_path / "again", **s3_bucket.settings())
