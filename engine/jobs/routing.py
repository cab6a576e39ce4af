"""Routing by warmth: a thread's next job prefers the worker that ran its previous turn.

A worker keeps warm state per thread (decoded context, context latents, prompt embeddings) and
per persona (its loaded LoRA adapter), see engine.render.caches. Every job still goes into the one
shared arq queue, so nothing can be stranded on a dead worker; routing only adds a short-lived
*pin*, a hint with a deadline:

* Each worker marks itself alive (``ALIVE_PREFIX + worker``, expiring after :data:`ALIVE_S`)
  every :data:`BEAT_S` from a task of its own, and on each job start records itself as the warm
  worker of the job's thread and persona. The beat also names it in :data:`ALIVE_SET`, so
  :func:`live_workers` reads the workers without a SCAN of the keyspace (which grows with every
  job's keys, and each worker lists the live workers every beat: engine.jobs.core_share).
* On enqueue (:func:`pin`) the client looks up the thread's warm worker (else the persona's). If
  it is alive and has fewer than :data:`MAX_BEHIND` pinned jobs waiting, the job is pinned to it:
  ``ROUTE_PREFIX + job`` = worker, expiring after :data:`GRACE_S`.
* A worker about to take jobs (:func:`claimable`) takes its own pinned jobs first, then unpinned
  ones, and skips jobs pinned to another *live* worker. When the pin expires (the warm worker was
  busy) or the warm worker's alive key lapses (it died), any worker takes the job: a job waits on
  its warm worker for at most the grace.

The share of jobs that ran where their thread was warm is counted in :data:`STATS_KEY`.
"""

from __future__ import annotations

import time
from typing import Any

from arq.constants import in_progress_key_prefix

GRACE_S = 2.0
ALIVE_S = 3.0
BEAT_S = 1.0
MAX_BEHIND = 2
WARM_TTL_S = 24 * 3600
ALIVE_PREFIX = "persona-studio:alive:"
#: sorted set: worker -> unix time of its last beat; a member is live while its alive key is set
ALIVE_SET = "persona-studio:alive-workers"
FORGET_AFTER_S = 3600.0  # members that have not beaten for this long leave ALIVE_SET
ROUTE_PREFIX = "persona-studio:route:"
PINNED_PREFIX = "persona-studio:pinned:"  # sorted set per worker: pinned job -> deadline (ms)
WARM_THREAD_PREFIX = "persona-studio:warm:thread:"
WARM_PERSONA_PREFIX = "persona-studio:warm:persona:"
STATS_KEY = "persona-studio:routing"


def _warm_keys(spec: dict[str, Any]) -> list[str]:
    keys = []
    if spec.get("thread_id") is not None:
        keys.append(f"{WARM_THREAD_PREFIX}{spec['thread_id']}")
    persona_id = (spec.get("persona") or {}).get("persona_id")
    if persona_id:
        keys.append(f"{WARM_PERSONA_PREFIX}{persona_id}")
    return keys


def _text(raw: Any) -> str | None:
    return raw.decode() if isinstance(raw, bytes) else raw


async def beat(redis: Any, worker_id: str) -> None:
    now = time.time()
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(ALIVE_PREFIX + worker_id, str(now), px=int(ALIVE_S * 1000))
        pipe.zadd(ALIVE_SET, {worker_id: now})
        pipe.zremrangebyscore(ALIVE_SET, "-inf", now - FORGET_AFTER_S)
        await pipe.execute()


async def leave(redis: Any, worker_id: str) -> None:
    """A worker stopping: no new pins, and its pinned jobs go to anyone at once."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(ALIVE_PREFIX + worker_id)
        pipe.zrem(ALIVE_SET, worker_id)
        await pipe.execute()


async def live_workers(redis: Any) -> list[str]:
    """The workers whose alive key is set: :data:`ALIVE_SET`'s members, checked in one MGET."""
    members = [_text(m) for m in await redis.zrange(ALIVE_SET, 0, -1)]
    if not members:
        return []
    alive = await redis.mget([ALIVE_PREFIX + m for m in members])
    return sorted(m for m, is_alive in zip(members, alive, strict=True) if m and is_alive)


async def pin(redis: Any, spec: dict[str, Any]) -> str | None:
    """Pin a job about to be enqueued to its warm worker; return that worker (None: anyone's)."""
    keys = _warm_keys(spec)
    if not keys:
        return None
    worker = next((w for w in map(_text, await redis.mget(keys)) if w), None)
    if worker is None or not await redis.exists(ALIVE_PREFIX + worker):
        return None
    now = time.time()
    backlog = PINNED_PREFIX + worker
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zremrangebyscore(backlog, "-inf", int(now * 1000))
        pipe.zcard(backlog)
        _, waiting = await pipe.execute()
    if waiting >= MAX_BEHIND:
        await redis.hincrby(STATS_KEY, "not_pinned_behind", 1)
        return None
    deadline_ms = int((now + GRACE_S) * 1000)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(ROUTE_PREFIX + spec["job_id"], worker, px=int(GRACE_S * 1000))
        pipe.zadd(backlog, {spec["job_id"]: deadline_ms})
        pipe.pexpire(backlog, int(GRACE_S * 1000) + 1000)
        pipe.hincrby(STATS_KEY, "pinned", 1)
        await pipe.execute()
    return worker


async def claimable(redis: Any, worker_id: str, job_ids: list[bytes], limit: int) -> list[bytes]:
    """Of the due ``job_ids`` (queue order), those this worker may start now, its pins first."""
    if not job_ids or limit <= 0:
        return []
    ids = [_text(j) for j in job_ids]
    async with redis.pipeline(transaction=False) as pipe:
        pipe.mget([ROUTE_PREFIX + i for i in ids])
        for i in ids:
            pipe.exists(in_progress_key_prefix + i)
        results = await pipe.execute()
    pins, running = [_text(p) for p in results[0]], results[1:]
    mine: list[bytes] = []
    free: list[bytes] = []
    others: dict[str, list[bytes]] = {}
    for raw, owner, busy in zip(job_ids, pins, running, strict=True):
        if busy:
            continue
        if owner is None:
            free.append(raw)
        elif owner == worker_id:
            mine.append(raw)
        else:
            others.setdefault(owner, []).append(raw)
    if others:  # pinned to another worker: take them only when that worker is gone
        alive = await redis.mget([ALIVE_PREFIX + w for w in others])
        for raws, is_alive in zip(others.values(), alive, strict=True):
            if not is_alive:
                free.extend(raws)
        free.sort(key=job_ids.index)
    return (mine + free)[:limit]


async def record_start(redis: Any, worker_id: str, spec: dict[str, Any]) -> bool | None:
    """A job starts on ``worker_id``: it is now the warm worker of the job's thread and persona.

    Returns whether the thread was warm here (None when the thread had no previous job).
    """
    thread_key = f"{WARM_THREAD_PREFIX}{spec['thread_id']}" if spec.get("thread_id") is not None else None
    previous = _text(await redis.get(thread_key)) if thread_key else None
    async with redis.pipeline(transaction=True) as pipe:
        for key in _warm_keys(spec):
            pipe.set(key, worker_id, ex=WARM_TTL_S)
        pipe.zrem(PINNED_PREFIX + worker_id, spec["job_id"])
        hit = None if previous is None else previous == worker_id
        if hit is not None:
            pipe.hincrby(STATS_KEY, "warm" if hit else "cold", 1)
        await pipe.execute()
    return hit


async def stats(redis: Any) -> dict[str, int]:
    """Counters: warm / cold starts of follow-up jobs, jobs pinned, pins refused (worker behind)."""
    raw = await redis.hgetall(STATS_KEY)
    return {_text(k): int(v) for k, v in raw.items()}


def warm_share(counters: dict[str, int]) -> float | None:
    total = counters.get("warm", 0) + counters.get("cold", 0)
    return counters.get("warm", 0) / total if total else None
