"""End to end: one ``persona-studio worker`` vs a pair on one host, as a user runs them (issue 20 item 7).

    python bench/worker_pair.py                          # 40 posts at 128², 8 steps, each set-up once
    python bench/worker_pair.py --repeats 3 --json       # medians of 3 interleaved runs, as JSON
    python bench/worker_pair.py --jobs 40 --size 128 --steps 8 --users 8 --postgres

A redis-server, this process as the front end (the app with REDIS_URL set: console front ends
enqueue through arq, hear the events and deliver the results) and 1 or 2 ``persona-studio worker``
processes (the real CLI, tiny engine on CPU) sharing redis, a SQLite file (``--postgres``: a
throwaway PostgreSQL database) and one BLOB_DIR. ``--users`` console users share one persona;
each has ``/settings steps=S size=NxN``; all send their ``/post`` at once (``--jobs`` in all,
after ``2 x workers`` warm-up posts). Set-ups: ``one`` (one worker, nothing set), ``pair_fixed``
(two, WORKERS_PER_HOST=2) and ``pair_auto`` (two, nothing set: the per-host share of
engine.jobs.core_share). jobs/s = posts / (first send to last delivery at the front end).

Where the time goes, per set-up: CPU seconds of each process over the burst (psutil: the front
end, each worker, redis-server, and the rest of the host), per Python process its main thread
(the event loop) apart from its busiest other threads (the engine's, torch's pool, aiosqlite's),
the front end's SQL statements and redis-server's commands per post; and per job from storage:
the worker's wall (started_at to finished_at) vs the engine's own time (the result's
``seconds``), the wait between one job finishing and the next starting on the same worker, and
finished_at to delivery at the front end. Which worker ran a job comes from its log ("job … starts").
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/queue.py sits next to this file: its folder must not shadow the standard library's ``queue``.
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter, defaultdict  # noqa: E402
from collections.abc import AsyncIterator  # noqa: E402
from itertools import pairwise  # noqa: E402
from typing import Any  # noqa: E402

from bench.processes import cpu_seconds, host_busy_seconds, spawn_worker, stop  # noqa: E402
from bench.stats import ms_summary  # noqa: E402
from tests.services import RedisServer, postgres_database, redis_binary  # noqa: E402

#: set-up -> (workers, environment of each worker); None unsets a variable the caller's shell may have
SETUPS: dict[str, tuple[int, dict[str, str | None]]] = {
    "one": (1, {"WORKERS_PER_HOST": None, "ENGINE_THREADS": None}),
    "pair_fixed": (2, {"WORKERS_PER_HOST": "2", "ENGINE_THREADS": None}),
    "pair_auto": (2, {"WORKERS_PER_HOST": None, "ENGINE_THREADS": None}),
    # one worker on one torch thread: what each of a pair has; `one` over this is torch's own
    # gain from the second core, and a pair can beat `one` by at most 2 / that gain
    "one_1thread": (1, {"WORKERS_PER_HOST": None, "ENGINE_THREADS": "1"}),
}
PERSONA = "Mira"
JOB_LIMIT_S = float(os.environ.get("BENCH_JOB_LIMIT_S", 600))


class Studio:
    """The front end (this process) and what the worker processes share."""

    def __init__(self, root: Path, app: Any, redis_server: RedisServer, database_url: str, users: int) -> None:
        from bot.console import ConsoleFrontEnd

        self.root, self.app, self.redis_server, self.database_url = root, app, redis_server, database_url
        self.fronts = [
            ConsoleFrontEnd(app.conversation, root / "out", user=f"u{i}", stream=io.StringIO(), live=False)
            for i in range(users)
        ]
        #: a platform has one deliverer, the console front end registered last: every console
        #: user's results and progress go through it (as one Discord client serves every user)
        self.receiver = self.fronts[-1]
        app.conversation.add_deliverer(self.receiver.platform, self._deliver)  # it, timing each result
        self.delivered_at: dict[str, float] = {}
        self.persona_ready = False

    async def _deliver(self, actions: Any) -> None:
        from commands.events import Progress
        from engine.jobs.events import FINISHED_STATES

        await self.receiver.deliver(actions)
        for action in actions:
            if isinstance(action, Progress) and action.state in FINISHED_STATES:
                self.delivered_at.setdefault(action.job_id, time.time())

    def worker_env(self, extra: dict[str, str | None]) -> dict[str, str | None]:
        return {
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_server.url,
            "BLOB_DIR": str(self.root / "blobs"),  # one host: the front end reads what workers store
            **extra,
        }

    async def send(self, front: Any, line: str) -> list[str]:
        """Send a line; the ids of the jobs it queued."""
        from commands.events import Progress

        actions = await front.send(line)
        ids = [a.job_id for a in actions if isinstance(a, Progress) and a.state == "queued"]
        if not ids:
            raise RuntimeError(f"{line!r} queued nothing: {[getattr(a, 'text', a) for a in actions]}")
        return ids

    async def posts(self, count: int, tag: str) -> list[str]:
        """``count`` posts, the users taking turns, all sent at once; waits until all are delivered."""

        async def user(k: int) -> list[str]:
            ids = []
            for i in range(k, count, len(self.fronts)):
                ids += await self.send(self.fronts[k], f"/post {PERSONA} {tag} look {i}: a red dress on the terrace")
            for job_id in ids:
                await self.receiver.wait_job(job_id, JOB_LIMIT_S)
            return ids

        per_user = await asyncio.gather(*(user(k) for k in range(min(count, len(self.fronts)))))
        return [j for ids in per_user for j in ids]


async def live_pids(redis: Any) -> set[int]:
    from engine.jobs import routing

    return {int(w.rsplit(":", 1)[1]) for w in await routing.live_workers(redis)}


def worker_log(log: Path) -> dict[str, Any]:
    """Job ids this worker started and its core-share lines, from its log."""
    text = log.read_text(errors="replace")
    return {
        "jobs": re.findall(r"job (\w+) starts", text),
        "threads": [int(n) for n in re.findall(r"torch threads = (\d+)", text)],
    }


def thread_cpu(pid: int) -> dict[int, float]:
    import psutil

    return {t.id: t.user_time + t.system_time for t in psutil.Process(pid).threads()}


def cpu_snapshot(pids: dict[str, int]) -> dict[str, Any]:
    return {
        "t": time.perf_counter(),
        "host": host_busy_seconds(),
        "pids": pids,
        "cpu": {name: cpu_seconds(pid) for name, pid in pids.items()},
        "threads": {name: thread_cpu(pid) for name, pid in pids.items() if name != "redis"},
    }


def cpu_figures(before: dict[str, Any], after: dict[str, Any], jobs: int) -> dict[str, Any]:
    """CPU seconds of each process over the burst, per job, and as cores busy (÷ wall); per Python
    process its main thread (the event loop) apart from its busiest other threads (the engine's,
    torch's pool, aiosqlite's, the PNG storers)."""
    wall = after["t"] - before["t"]
    used = {name: after["cpu"][name] - before["cpu"][name] for name in before["cpu"]}
    used["rest_of_host"] = max(0.0, after["host"] - before["host"] - sum(used.values()))
    threads = {}
    for name, start in before["threads"].items():
        pid, end = before["pids"][name], after["threads"][name]
        others = sorted((end.get(tid, 0.0) - s for tid, s in start.items() if tid != pid), reverse=True)
        threads[name] = {"loop": round(end[pid] - start[pid], 2), "others": [round(d, 2) for d in others[:3]]}
    return {
        "cpu_s": {k: round(v, 2) for k, v in used.items()},
        "cpu_ms_per_job": {k: round(v / jobs * 1000, 1) for k, v in used.items()},
        "cores_busy": {k: round(v / wall, 2) for k, v in used.items()},
        "threads_cpu_s": threads,
        "cores": os.cpu_count(),
    }


async def redis_calls(redis: Any) -> dict[str, int]:
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in (await redis.info("commandstats")).items()}


def job_figures(rows: list[Any], delivered: dict[str, float], runs_on: dict[str, str]) -> dict[str, Any]:
    """Per job from storage: worker wall vs engine time, gaps between jobs on a worker, delivery lag."""
    on_worker, engine, outside, lag = [], [], [], []
    by_worker: dict[str, list[Any]] = defaultdict(list)
    stages: dict[str, list[float]] = defaultdict(list)
    for job in rows:
        result = job.result or {}
        wall = (job.finished_at - job.started_at).total_seconds()
        on_worker.append(wall)
        engine.append(float(result.get("seconds", 0.0)))
        outside.append(wall - engine[-1])
        lag.append(delivered[job.id] - job.finished_at.timestamp())
        for stage, seconds in (result.get("timings") or {}).items():
            stages[stage].append(float(seconds))
        by_worker[runs_on.get(job.id, "?")].append(job)
    gaps = []
    for jobs in by_worker.values():
        jobs.sort(key=lambda j: j.started_at)
        gaps += [(b.started_at - a.finished_at).total_seconds() for a, b in pairwise(jobs)]
    return {
        "jobs_per_worker": {w: len(j) for w, j in by_worker.items()},
        "on_worker": ms_summary(on_worker),
        "engine": ms_summary(engine),
        "on_worker_outside_engine": ms_summary(outside),
        "gap_between_jobs": ms_summary(gaps) if gaps else None,
        "finished_to_delivered": ms_summary(lag),
        "engine_stage_p50_ms": {k: round(statistics.median(v) * 1000, 1) for k, v in sorted(stages.items())},
        "on_worker_per_engine_s": round(sum(on_worker) / sum(engine), 3) if sum(engine) else None,
    }


async def run_setup(studio: Studio, name: str, repeat: int, jobs: int) -> dict[str, Any]:
    import redis.asyncio as aioredis
    from sqlalchemy import event

    from engine.jobs import routing

    count, extra = SETUPS[name]
    logs = [studio.root / f"{name}-{repeat}-w{i}.log" for i in range(count)]
    redis = aioredis.Redis.from_url(studio.redis_server.url)
    workers: list[subprocess.Popen[bytes]] = []
    load_before = os.getloadavg()
    try:
        env = studio.worker_env(extra)
        workers = [spawn_worker(studio.root, f"{name}-{repeat}-w{i}", env, log) for i, log in enumerate(logs)]
        pids = {p.pid for p in workers}
        deadline = time.monotonic() + 300
        while await live_pids(redis) != pids:  # loaded (alive beats start after the load), old ones gone
            if time.monotonic() > deadline or any(p.poll() is not None for p in workers):
                raise RuntimeError(f"{name}: workers did not come up; see {logs}")
            await asyncio.sleep(0.2)
        await asyncio.sleep(2 * routing.BEAT_S + 0.5)  # each has counted the other (core share)
        if not studio.persona_ready:
            [job_id] = await studio.send(studio.fronts[0], f"/persona create sweet {PERSONA}")
            await studio.receiver.wait_job(job_id, JOB_LIMIT_S)
            studio.persona_ready = True
        await studio.posts(2 * count, f"{name}{repeat}-warm")  # each worker's first 128² jobs
        await redis.delete(routing.STATS_KEY)
        processes = {"front_end": os.getpid(), "redis": studio.redis_server.process.pid}  # type: ignore[union-attr]
        processes |= {f"worker_{i}": p.pid for i, p in enumerate(workers)}
        sql: Counter[str] = Counter()

        def on_sql(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            sql[statement.split(None, 1)[0].upper()] += 1

        calls = await redis_calls(redis)
        event.listen(studio.app.db.engine.sync_engine, "before_cursor_execute", on_sql)
        before = cpu_snapshot(processes)
        try:
            ids = await studio.posts(jobs, f"{name}{repeat}")
        finally:
            after = cpu_snapshot(processes)
            event.remove(studio.app.db.engine.sync_engine, "before_cursor_execute", on_sql)
        calls = Counter(await redis_calls(redis)) - Counter(calls)
        wall = after["t"] - before["t"]
        rows = [await studio.app.store.get_job(job_id) for job_id in ids]
        counters = await routing.stats(redis)
    finally:
        stop(workers)
        await redis.aclose()
    names = {str(p.pid): f"worker_{i}" for i, p in enumerate(workers)}
    seen = {str(p.pid): worker_log(log) for p, log in zip(workers, logs, strict=True)}
    runs_on = {job_id: names[pid] for pid, found in seen.items() for job_id in found["jobs"]}
    starts = [r.started_at.timestamp() for r in rows]
    ends = [r.finished_at.timestamp() for r in rows]
    return {
        "workers": count,
        "env": {k: v for k, v in extra.items() if v is not None},
        "core_share_threads": {names[pid]: found["threads"] for pid, found in seen.items()},
        "jobs": len(ids),
        "wall_s": round(wall, 2),
        "jobs_per_s": round(len(ids) / wall, 2),
        "workers_span_s": round(max(ends) - min(starts), 2),  # first start to last finish in storage
        "routing": counters,
        "front_end_sql_per_job": {k: round(v / len(ids), 1) for k, v in sql.most_common()},
        "redis_calls_per_job": {k: round(v / len(ids), 1) for k, v in calls.most_common(8)},
        "redis_calls_per_job_all": round(sum(calls.values()) / len(ids), 1),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        **cpu_figures(before, after, len(ids)),
        **job_figures(rows, studio.delivered_at, runs_on),
    }


@contextlib.asynccontextmanager
async def database(root: Path, postgres: bool) -> AsyncIterator[str]:
    if postgres:
        async with postgres_database() as url:
            yield url
    else:
        yield f"sqlite+aiosqlite:///{root / 'studio.db'}"


async def bench(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    from bot.app import build_app
    from storage.settings import load_settings

    setups = [s for s in args.setups.split(",") if s]
    redis_server = RedisServer(redis_binary() or "redis-server")
    redis_server.start()
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in setups}
    try:
        async with database(root, args.postgres) as database_url:
            settings = load_settings(
                database_url=database_url,
                redis_url=redis_server.url,
                blob_dir=root / "blobs",
                lora_dir=root / "front-loras",
                engine_model="tiny",
                max_waiting_jobs=args.jobs,
            )
            app = await build_app(settings, engine=None)
            try:
                studio = Studio(root, app, redis_server, database_url, args.users)
                for front in studio.fronts:
                    await front.send(f"/settings steps={args.steps} size={args.size}x{args.size}")
                for repeat in range(args.repeats):  # interleaved: the host's load drifts
                    for name in setups:
                        runs[name].append(await run_setup(studio, name, repeat, args.jobs))
                        print(f"{name} #{repeat}: {runs[name][-1]['jobs_per_s']} jobs/s", file=sys.stderr)
            finally:
                await app.close()
    finally:
        redis_server.close()
    rate = {name: statistics.median(r["jobs_per_s"] for r in rs) for name, rs in runs.items()}
    out: dict[str, Any] = {
        "jobs": args.jobs,
        "size": args.size,
        "steps": args.steps,
        "users": args.users,
        "database": "postgresql" if args.postgres else "sqlite",
        "cores": os.cpu_count(),
        "jobs_per_s_median": {k: round(v, 2) for k, v in rate.items()},
        "runs": runs,
    }
    if "one" in rate:
        out["vs_one"] = {k: round(v / rate["one"], 2) for k, v in rate.items() if k != "one"}
    return out


def table(result: dict[str, Any]) -> str:
    lines = [
        f"{result['jobs']} posts, {result['size']}², {result['steps']} steps, {result['users']} users, "
        f"{result['database']}, {result['cores']} cores; medians: {result['jobs_per_s_median']} "
        f"vs one: {result.get('vs_one')}"
    ]
    for name, runs in result["runs"].items():
        for r in runs:
            eng, out, gap = r["engine"], r["on_worker_outside_engine"], r["gap_between_jobs"] or {}
            lines += [
                f"{name:10s} {r['jobs_per_s']:6.2f} jobs/s  wall {r['wall_s']} s  load {r['loadavg_before']}"
                f" -> {r['loadavg_after']}  threads {r['core_share_threads']}  jobs {r['jobs_per_worker']}",
                f"  per job p50: engine {eng['p50_ms']} ms, on worker outside engine {out['p50_ms']} ms,"
                f" gap {gap.get('p50_ms')} ms, finished->delivered {r['finished_to_delivered']['p50_ms']} ms",
                f"  cores busy: {r['cores_busy']}  threads (cpu s): {r['threads_cpu_s']}",
                f"  per job: front-end SQL {r['front_end_sql_per_job']}, redis calls {r['redis_calls_per_job_all']}",
            ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=40, help="posts per measured burst")
    parser.add_argument("--size", type=int, default=128, help="image side, pixels (32-256 on the tiny model)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--users", type=int, default=8, help="console users sending the posts, turn about")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved runs of every set-up; medians")
    parser.add_argument("--setups", default=",".join(SETUPS), help=f"comma-separated, of {', '.join(SETUPS)}")
    parser.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL database (TEST_POSTGRES_URL)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    root = Path(tempfile.mkdtemp(prefix="bench-pair-"))
    try:
        result = asyncio.run(bench(root, args))
    finally:
        if os.environ.get("BENCH_KEEP"):
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result, indent=2) if args.json else table(result))
    return result


if __name__ == "__main__":
    main()
