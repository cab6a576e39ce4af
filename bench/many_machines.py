"""Benchmark the many-machines setup: the blob store local vs S3, and routing by warmth.

    python bench/many_machines.py                       # both parts, a table
    python bench/many_machines.py --json
    python bench/many_machines.py --threads 20 --edits 3 --blobs 30

Blobs: ``put`` and ``get`` of distinct 1024² PNGs (noise, ~3 MiB each) on the local folder store
and on the S3 store against moto's S3 server on loopback (boto3, the production client). S3 get
is measured cold (a second store with an empty cache downloads) and warm (its cache hit).

Routing: a front end and two ``persona-studio worker`` processes (tiny engine on CPU) sharing a
redis-server, a SQLite file and the loopback bucket (each worker its own BLOB_DIR and LORA_DIR).
``--threads`` users each create a persona, open a post and send ``--edits`` edits one after
another, all users at once; once with routing (engine.jobs.routing) and once without
(``ArqQueue.route_warm = False``). Per mode: the share of follow-up jobs that ran on the worker
where their thread was warm (engine.jobs.routing.stats), and the median edit time on the worker
(its started_at to finished_at in storage).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

# bench/queue.py sits next to this file: its folder must not shadow the standard library's ``queue``.
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent))

from bench.processes import spawn_worker, stop  # noqa: E402
from storage.blobs import BlobStore, open_blob_store  # noqa: E402
from storage.settings import load_settings  # noqa: E402
from tests.services import RedisServer, free_port, redis_binary  # noqa: E402

BUCKET = "bench-blobs"
AWS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_REGION": "us-east-1"}


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000  # ms


def s3_env(endpoint: str) -> dict[str, str]:
    return {"BLOB_URL": f"s3://{BUCKET}/blobs", "AWS_ENDPOINT_URL": endpoint, **AWS}


def s3_store(endpoint: str, cache: Path) -> BlobStore:
    env = s3_env(endpoint)
    return open_blob_store(load_settings(blob_dir=cache, **{k.lower(): v for k, v in env.items()}))


def bench_blobs(root: Path, endpoint: str, count: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    pngs = []
    for _ in range(count):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (1024, 1024, 3), dtype=np.uint8)).save(buf, format="PNG")
        pngs.append(buf.getvalue())

    def timed(fn: Any, items: list[Any]) -> list[float]:
        out = []
        for item in items:
            t0 = time.perf_counter()
            fn(item)
            out.append(time.perf_counter() - t0)
        return out

    local = BlobStore(root / "local")
    remote = s3_store(endpoint, root / "s3-cache-writer")
    reader = s3_store(endpoint, root / "s3-cache-reader")
    keys = [local.put(p) for p in pngs[:1]]  # warm the imports and connection pools
    remote.put(pngs[0])
    results = {
        "local put": timed(local.put, pngs[1:]),
        "s3 put": timed(remote.put, pngs[1:]),
    }
    keys = [local.put(p) for p in pngs[1:]]
    results["local get"] = timed(local.get, keys)
    results["s3 get (cold cache)"] = timed(reader.get, keys)
    results["s3 get (cached)"] = timed(reader.get, keys)
    return {
        "png_mib": round(statistics.mean(len(p) for p in pngs) / 2**20, 2),
        **{name: {"p50_ms": round(pct(v, 50), 1), "p99_ms": round(pct(v, 99), 1)} for name, v in results.items()},
    }


async def bench_routing(root: Path, endpoint: str, redis_url: str, threads: int, edits: int) -> dict[str, Any]:
    import redis.asyncio as aioredis

    from bot.app import build_app
    from bot.console import ConsoleFrontEnd
    from commands.events import Progress
    from engine.jobs import routing
    from engine.jobs.queue import ArqQueue

    env = s3_env(endpoint)
    database_url = f"sqlite+aiosqlite:///{root / 'studio.db'}"
    settings = load_settings(
        database_url=database_url,
        redis_url=redis_url,
        blob_dir=root / "front",
        lora_dir=root / "front-loras",
        max_running_jobs=4,
        max_waiting_jobs=50,
        **{k.lower(): v for k, v in env.items()},
    )
    app = await build_app(settings, engine=None)
    workers = [spawn_worker(root, name, {**env, "DATABASE_URL": database_url, "REDIS_URL": redis_url}) for name in "ab"]
    redis = aioredis.Redis.from_url(redis_url)
    out: dict[str, Any] = {}
    try:
        while len(await routing.live_workers(redis)) < 2:  # noqa: ASYNC110 (state in redis)
            await asyncio.sleep(0.2)
        queue = app.conversation.queue
        assert isinstance(queue, ArqQueue)

        async def finished(job_id: str) -> Any:
            """The job's row once a worker has finished it (storage is the record, not delivery)."""
            deadline = time.monotonic() + float(os.environ.get("BENCH_JOB_LIMIT_S", 600))
            while time.monotonic() < deadline:
                job = await app.store.get_job(job_id)
                if job is not None and job.finished_at is not None:
                    return job
                await asyncio.sleep(0.1)
            raise TimeoutError(f"job {job_id} did not finish")

        for mode in ("routed", "unrouted"):
            queue.route_warm = mode == "routed"
            await redis.delete(routing.STATS_KEY)
            edit_jobs: list[float] = []  # seconds from start to finish of each edit on its worker

            async def user(i: int, mode: str = mode, edit_jobs: list[float] = edit_jobs) -> None:
                front = ConsoleFrontEnd(
                    app.conversation, root / "out", user=f"{mode}{i}", stream=io.StringIO(), live=False
                )
                lines = [f"/persona create sweet P{i}", f"/post P{i} a red dress on the terrace"]
                lines += [f"edit number {n}: hold the cup higher" for n in range(edits)]
                for n, line in enumerate(lines):
                    actions = await front.send(line)
                    jobs = [a.job_id for a in actions if isinstance(a, Progress) and a.state == "queued"]
                    for job_id in jobs:
                        job = await finished(job_id)
                        if n >= 2:
                            edit_jobs.append((job.finished_at - job.started_at).total_seconds())

            t0 = time.perf_counter()
            await asyncio.gather(*(user(i) for i in range(threads)))
            wall = time.perf_counter() - t0
            counters = await routing.stats(redis)
            times = edit_jobs
            out[mode] = {
                "warm_share": round(routing.warm_share(counters) or 0.0, 3),
                "counters": counters,
                "edits": len(times),
                "edit_p50_ms": round(statistics.median(times) * 1000, 1),
                "edit_mean_ms": round(statistics.mean(times) * 1000, 1),
                "wall_s": round(wall, 1),
            }
    finally:
        stop(workers)
        await redis.aclose()
        await app.close()
    out["edit_p50_saved_ms"] = round(out["unrouted"]["edit_p50_ms"] - out["routed"]["edit_p50_ms"], 1)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blobs", type=int, default=30, help="1024² PNGs per blob measurement")
    parser.add_argument("--threads", type=int, default=20)
    parser.add_argument("--edits", type=int, default=3, help="edits per thread")
    parser.add_argument("--skip-routing", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from moto.server import ThreadedMotoServer

    root = Path(tempfile.mkdtemp(prefix="bench-many-"))
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{port}"
    redis_server = RedisServer(redis_binary() or "redis-server")
    try:
        import logging

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        client = s3_store(endpoint, root / "probe")
        client.client.create_bucket(Bucket=BUCKET)  # type: ignore[attr-defined]
        result: dict[str, Any] = {"blobs": bench_blobs(root, endpoint, args.blobs)}
        if not args.skip_routing:
            redis_server.start()
            result["routing"] = asyncio.run(bench_routing(root, endpoint, redis_server.url, args.threads, args.edits))
    finally:
        redis_server.close()
        moto.stop()
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"blobs: {args.blobs - 1} distinct 1024² PNGs of {result['blobs']['png_mib']} MiB")
        for name, row in result["blobs"].items():
            if isinstance(row, dict):
                print(f"  {name:22s} p50 {row['p50_ms']:8.1f} ms   p99 {row['p99_ms']:8.1f} ms")
        for mode in ("routed", "unrouted"):
            row = result.get("routing", {}).get(mode)
            if row:
                print(
                    f"routing {mode:9s} warm-hit share {row['warm_share']:.0%}  edit p50 {row['edit_p50_ms']} ms"
                    f"  mean {row['edit_mean_ms']} ms  ({row['edits']} edits, {row['wall_s']} s)"
                )
        if "routing" in result:
            print(f"edit p50 saved by routing: {result['routing']['edit_p50_saved_ms']} ms")
    return result


if __name__ == "__main__":
    main()
