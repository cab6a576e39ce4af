"""Benchmark everything outside the model (issue 16), on the tiny model, as JSON.

    python bench/outside_model.py              # every part
    python bench/outside_model.py --only png,edit

Parts:

* ``png``: encode time and size of a 1024² photo (insightface's t1.jpg, resized) per zlib level;
* ``outside``: tiny-model generate jobs at 1024², 1 step: per job the engine lock held outside the
  model (GPU idle) and the store (PNG encode, sha256, write) that now runs after the lock;
* ``edit``: next edit in a thread (cached latents of the result) vs a cold edit (new thread), 64²;
* ``workers``: 40 tiny jobs on 1 process vs 2 processes, torch threads from ENGINE_THREADS's default
  (cores / WORKERS_PER_HOST), and 2 processes with torch's own default (every core each);
* ``coldstart``: the embedded queue's warm start (imports + tiny model load in a thread): max
  event-loop lag (a 5 ms ticker) while it loads;
* ``reads``: 50 concurrent command-style read handlers (user, personas, the user's jobs) against
  ~480 queued jobs while job writers run, with read sessions vs with every transaction
  BEGIN IMMEDIATE (the old behaviour): per-handler answer time.
"""

from __future__ import annotations

import sys
from pathlib import Path

_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import importlib.util  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from typing import Any  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.stats import ms_summary  # noqa: E402


def bench_png() -> dict[str, Any]:
    from PIL import Image

    photo = Path(importlib.util.find_spec("insightface").origin).parent / "data" / "images" / "t1.jpg"  # type: ignore[arg-type, union-attr]
    image = Image.open(photo).convert("RGB").resize((1024, 1024))
    out = {}
    for level in (0, 1, 3, 6, 9):
        times = []
        for _ in range(5):
            buf = io.BytesIO()
            started = time.perf_counter()
            image.save(buf, format="PNG", compress_level=level)
            times.append(time.perf_counter() - started)
        out[f"level_{level}"] = {
            "encode_ms": round(statistics.median(times) * 1000, 1),
            "kib": len(buf.getvalue()) // 1024,
        }
    return out


def _engine(root: Path, **kwargs: Any) -> Any:
    from engine.config import EngineConfig
    from engine.render.engine import Engine
    from storage.blobs import BlobStore

    config = EngineConfig(model="tiny", lora_dir=root / "loras", identity_threshold=0.55, **kwargs)
    engine = Engine(config, BlobStore(root / "blobs"))
    engine.load()
    return engine


def _spec(kind: str, **fields: Any) -> Any:
    from engine.specs import JobSpec, PersonaSpec, default_params

    fields.setdefault("params", default_params("tiny"))  # 64², 4 steps
    return JobSpec(job_id=uuid.uuid4().hex, kind=kind, persona=PersonaSpec(archetype="sweet", seed=1), **fields)


def bench_outside(root: Path, jobs: int) -> dict[str, Any]:
    from engine.specs import RenderParams

    params = RenderParams(steps=1, guidance=2.5, width=1024, height=1024, max_tries=1)
    out = {}
    for level in (1, 6):
        engine = _engine(root / f"outside-{level}", png_compress_level=level)
        engine.run(_spec("generate", prompt="warm-up", params=params, seed=999))
        locked_outside, store, total_outside = [], [], []
        for i in range(jobs):
            before = dict(engine.seconds)
            started = time.perf_counter()
            engine.run(_spec("generate", prompt="a cafe", params=params, seed=i))
            wall = time.perf_counter() - started
            d = {k: engine.seconds[k] - before.get(k, 0.0) for k in engine.seconds}
            locked_outside.append(d["locked"] - d["model"])
            store.append(d["settle"])
            total_outside.append(wall - d["model"])
        out[f"png_level_{level}"] = {
            "lock_held_outside_model": ms_summary(locked_outside),
            "store_after_lock": ms_summary(store),
            "job_wall_outside_model": ms_summary(total_outside),
        }
    return out


def bench_edit(root: Path, rounds: int) -> dict[str, Any]:
    engine = _engine(root / "edit")
    start = engine.blobs.put_image(__import__("PIL.Image").Image.new("RGB", (64, 64), (40, 90, 160)))
    first = engine.run(_spec("edit", thread_id=1, prompt="smile", context_keys=[start]))
    warm, cold = [], []
    key = first.image_keys[0]
    for i in range(rounds):
        encodes = engine.stats["context_encodes"]
        started = time.perf_counter()
        result = engine.run(_spec("edit", thread_id=1, prompt="smile", context_keys=[key], seed=i))
        warm.append(time.perf_counter() - started)
        assert engine.stats["context_encodes"] == encodes  # really warm
        started = time.perf_counter()
        engine.run(_spec("edit", thread_id=10_000 + i, prompt="smile", context_keys=[key], seed=i))
        cold.append(time.perf_counter() - started)
        assert engine.stats["context_encodes"] == encodes + 1  # really cold
        key = result.image_keys[0]
    w, c = statistics.median(warm), statistics.median(cold)
    return {"next_edit": ms_summary(warm), "cold_edit": ms_summary(cold), "ratio_p50": round(w / c, 3)}


def _worker(root: str, jobs: int, threads: int | None, ready: Any, go: Any, done: Any) -> None:
    engine = _engine(Path(root), threads=threads)
    engine.run(_spec("generate", prompt="warm-up", seed=999))
    ready.put(os.getpid())
    go.wait()
    for i in range(jobs):
        engine.run(_spec("generate", prompt="a park", seed=i))
    done.put(time.perf_counter())


def _throughput(root: Path, total: int, processes: int, threads: int | None) -> float:
    ctx = multiprocessing.get_context("spawn")
    ready, done, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [
        ctx.Process(target=_worker, args=(str(root / f"w{i}"), total // processes, threads, ready, go, done))
        for i in range(processes)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=300)
    started = time.perf_counter()
    go.set()
    ends = [done.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    return total / (max(ends) - started)


def bench_workers(root: Path, jobs: int, repeats: int = 3) -> dict[str, Any]:
    """Median jobs/s of each set-up over ``repeats`` interleaved runs (the host is shared)."""
    from storage.settings import load_settings

    setups = {
        "one_worker_default": (1, load_settings(workers_per_host=1).effective_engine_threads),
        "one_worker_1_thread": (1, 1),
        "two_workers_default": (2, load_settings(workers_per_host=2).effective_engine_threads),
        "two_workers_torch_all_cores": (2, None),
    }
    runs: dict[str, list[float]] = {name: [] for name in setups}
    for r in range(repeats):
        for name, (processes, threads) in setups.items():
            runs[name].append(_throughput(root / f"{name}-{r}", jobs, processes, threads))
    rate = {name: statistics.median(values) for name, values in runs.items()}
    best_single = max(rate["one_worker_default"], rate["one_worker_1_thread"])
    return {
        "cores": os.cpu_count(),
        "jobs": jobs,
        "threads": {name: threads for name, (_, threads) in setups.items()},
        "jobs_per_s_median": {name: round(v, 2) for name, v in rate.items()},
        "jobs_per_s_runs": {name: [round(v, 2) for v in values] for name, values in runs.items()},
        "two_vs_one_default": round(rate["two_workers_default"] / rate["one_worker_default"], 2),
        "two_vs_best_one": round(rate["two_workers_default"] / best_single, 2),
        "two_all_cores_vs_one_default": round(rate["two_workers_torch_all_cores"] / rate["one_worker_default"], 2),
    }


async def _coldstart(root: Path, preimport: bool) -> dict[str, Any]:
    from engine.jobs.queue import EmbeddedQueue
    from engine.jobs.runner import engine_runner_factory, import_engine_modules
    from storage.blobs import BlobStore
    from storage.db import Database
    from storage.repository import Store
    from storage.settings import load_settings

    settings = load_settings(
        engine_model="tiny",
        lora_dir=root / "loras",
        blob_dir=root / "blobs",
        database_url=f"sqlite+aiosqlite:///{root / 'cold.db'}",
    )
    db = Database(settings.database_url)
    await db.upgrade()
    store = Store(db)
    queue = EmbeddedQueue(store, engine_runner_factory(settings, store, BlobStore(settings.blob_dir)))
    imported = time.perf_counter()
    if preimport:  # what build_app does in embedded mode, before any front end connects
        import_engine_modules("dlib")
    imported = time.perf_counter() - imported
    lags: list[float] = []
    slow: list[tuple[float, float]] = []  # (seconds into the load, lag) of ticks over 100 ms
    started = time.perf_counter()
    await queue.start()
    while queue.readiness == "loading":
        tick = time.perf_counter()
        await asyncio.sleep(0.005)
        lags.append(time.perf_counter() - tick - 0.005)
        if lags[-1] > 0.1:
            slow.append((round(tick - started, 2), round(lags[-1], 3)))
    load_s = time.perf_counter() - started
    await queue.close()
    await db.dispose()
    return {
        "readiness": queue.readiness,
        "imports_before_loop_work_s": round(imported, 2),
        "load_s": round(load_s, 2),
        "ticks": len(lags),
        "loop_lag": ms_summary(lags),
        "stalls_over_100ms": slow,
    }


def _coldstart_process(root: str, preimport: bool) -> dict[str, Any]:
    return asyncio.run(_coldstart(Path(root), preimport))


async def _reads(root: Path, deferred: bool, handlers: int, queued: int) -> dict[str, Any]:
    from storage.db import Database
    from storage.models import JobStatus
    from storage.repository import Store

    database = Database(f"sqlite+aiosqlite:///{root / ('reads-new.db' if deferred else 'reads-old.db')}")
    await database.upgrade()
    if not deferred:  # the old behaviour: every transaction, reads included, BEGIN IMMEDIATE
        database.read = database.session  # type: ignore[method-assign]
    store = Store(database)
    owner = await store.user("discord", "owner", "Owner")
    for n in range(10):
        await store.user("discord", f"user-{n}", f"User {n}")
    for i in range(queued):
        await store.create_job(f"q{i}", "edit", {"i": i}, user_id=owner.id, thread_id=None, platform="discord")
    stop = asyncio.Event()

    async def writer(n: int) -> None:  # a worker's bookkeeping: start, progress, finish
        i = 0
        while not stop.is_set():
            job_id = f"w{n}-{i}"
            await store.create_job(job_id, "edit", {}, user_id=owner.id, thread_id=None, platform="discord")
            await store.start_job(job_id)
            await store.set_progress(job_id, 0.5)
            await store.finish_job(job_id, JobStatus.DONE, result={})
            i += 1

    async def handler(n: int) -> float:  # what a refused /post reads before it answers
        started = time.perf_counter()
        user = await store.user("discord", f"user-{n % 10}", f"User {n % 10}")
        await store.list_personas(user.id)
        await store.find_persona(user.id, "mia")
        await store.user_jobs(owner.id)
        return time.perf_counter() - started

    writers = [asyncio.create_task(writer(n)) for n in range(4)]
    await asyncio.sleep(0.2)  # writers under way
    times = await asyncio.gather(*(handler(n) for n in range(handlers)))
    stop.set()
    await asyncio.gather(*writers)
    await database.dispose()
    return ms_summary(list(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="png,outside,edit,workers,coldstart,reads")
    parser.add_argument("--jobs", type=int, default=5, help="1024² jobs for 'outside'")
    parser.add_argument("--rounds", type=int, default=7, help="edit pairs for 'edit'")
    parser.add_argument("--worker-jobs", type=int, default=40)
    args = parser.parse_args()
    parts = set(args.only.split(","))
    out: dict[str, Any] = {"cores": os.cpu_count(), "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if "png" in parts:
            out["png"] = bench_png()
        if "outside" in parts:
            out["outside"] = bench_outside(root, args.jobs)
        if "edit" in parts:
            out["edit"] = bench_edit(root, args.rounds)
        if "workers" in parts:
            out["workers"] = bench_workers(root, args.worker_jobs)
        if "coldstart" in parts:  # in a fresh process: nothing imported yet
            ctx = multiprocessing.get_context("spawn")
            out["coldstart"] = {}
            for label, preimport in (("imports_in_thread", False), ("imports_before_front_ends", True)):
                with ctx.Pool(1) as pool:
                    out["coldstart"][label] = pool.apply(_coldstart_process, (str(root / label), preimport))
        if "reads" in parts:
            out["reads"] = {
                "deferred_reads": asyncio.run(_reads(root, True, 50, 480)),
                "begin_immediate_everywhere": asyncio.run(_reads(root, False, 50, 480)),
            }
    out["load_after"] = os.getloadavg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
