"""Operators' endpoints: ``/healthz`` (the process is up), ``/readyz`` (database, blob store (an
S3 bucket's HEAD), queue and a worker's heartbeat, saying which failed) and ``/metrics`` (Prometheus text format).

``/metrics`` is this process's registry (engine.metrics.REGISTRY: jobs it finished, deliveries,
inbound events) plus the queue's state read from storage at scrape time, plus every live arq
worker's registry read from redis, each of their samples labelled ``worker``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from bot.web.state import STATE, WebState
from engine import metrics
from engine.jobs.worker_health import HEALTH_CHECK_INTERVAL_S, HEALTH_CHECK_KEYS
from storage.blobs import BlobStoreUnavailable
from storage.models import JobStatus

CHECK_TIMEOUT_S = 3.0
#: gauges only the web process sets (a worker's copy of them is empty or zero)
WEB_ONLY = {"persona_studio_queue_jobs", "persona_studio_workers"}


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def readyz(request: web.Request) -> web.Response:
    """200 when everything answers; 503 naming what failed."""
    state = request.app[STATE]
    checks = await readiness(state)
    failed = [name for name, (ok, _) in checks.items() if not ok]
    body = {"ready": not failed, "failed": failed, "checks": {name: text for name, (_, text) in checks.items()}}
    return web.json_response(body, status=503 if failed else 200)


async def readiness(state: WebState) -> dict[str, tuple[bool, str]]:
    checks: dict[str, tuple[bool, str]] = {}
    try:
        await asyncio.wait_for(state.reads.ping(), CHECK_TIMEOUT_S)
        checks["database"] = (True, "ok")
    except Exception as exc:
        checks["database"] = (False, f"unreachable: {_reason(exc)}")
    try:
        where = await asyncio.wait_for(asyncio.to_thread(state.blobs.check, CHECK_TIMEOUT_S), CHECK_TIMEOUT_S + 1)
        checks["blobs"] = (True, f"ok: {where}")
    except Exception as exc:
        checks["blobs"] = (False, str(exc) if isinstance(exc, BlobStoreUnavailable) else f"unusable: {_reason(exc)}")
    if state.redis is None:
        checks["queue"] = (True, "embedded (in-process; REDIS_URL unset)")
        return checks
    try:
        await asyncio.wait_for(state.redis.ping(), CHECK_TIMEOUT_S)
        checks["queue"] = (True, "ok (redis)")
    except Exception as exc:
        checks["queue"] = (False, f"redis unreachable: {_reason(exc)}")
        checks["worker"] = (False, "unknown: redis is unreachable")
        return checks
    try:
        lines = await asyncio.wait_for(state.redis.mget(HEALTH_CHECK_KEYS), CHECK_TIMEOUT_S)  # any queue's worker
        line = next((x for x in lines if x), None)
    except Exception as exc:
        line, checks["worker"] = None, (False, f"heartbeat unreadable: {_reason(exc)}")
    if "worker" not in checks:
        checks["worker"] = (
            (True, f"ok: {line.decode() if isinstance(line, bytes) else line}")
            if line
            else (False, f"no worker heartbeat in the last {HEALTH_CHECK_INTERVAL_S + 1} s")
        )
    return checks


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0][:160] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def metrics_page(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        counts = await asyncio.wait_for(state.reads.job_counts(), CHECK_TIMEOUT_S)
    except Exception:  # the database is down: /readyz says so; the rest of the page still goes out
        metrics.QUEUE.clear()
    else:
        for status in (JobStatus.HELD, JobStatus.QUEUED, JobStatus.RUNNING):
            metrics.QUEUE.labels(status=str(status)).set(counts.get(str(status), 0))
    workers: dict[str, tuple[float, str]] = {}
    if state.redis is not None:
        try:
            workers = await metrics.read_worker_metrics(state.redis)
        except Exception:  # redis is down: /readyz says so; the process's own metrics still go out
            workers = {}
        metrics.WORKERS.set(len(workers))
    body = merged_exposition(metrics.REGISTRY.collect(), {w: text for w, (_, text) in workers.items()})
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def merged_exposition(local: Iterable[Metric], workers: dict[str, str]) -> bytes:
    """One exposition of this process's families and each worker's, worker samples labelled."""
    families: dict[str, Metric] = {family.name: family for family in local}
    for worker, text in sorted(workers.items()):
        for family in text_string_to_metric_families(text):
            if family.name in WEB_ONLY:
                continue
            target = families.get(family.name)
            if target is None:
                target = families[family.name] = Metric(family.name, family.documentation, family.type)
            for sample in family.samples:
                target.samples.append(sample._replace(labels={**sample.labels, "worker": worker}))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(list(families.values())))  # type: ignore[arg-type]
    return generate_latest(registry)


class _Families:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Any]:
        return iter(self.families)
