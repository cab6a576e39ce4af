"""Prometheus metrics of every layer, and how a worker's metrics reach the web process.

The metric objects live here because engine/ is importable from commands/ and bot/ alike; each
layer counts what it sees (the engine: jobs, waits, run times, identity scores; commands:
deliveries and inbound events). They are registered in :data:`REGISTRY`, not prometheus-client's
global one, so tests and the web page see exactly these.

An arq worker is another process (often another machine): after each job and on each arq health
check it writes its registry, in the Prometheus text format, into the redis hash
:data:`WORKER_METRICS_KEY` (field: the worker's id). The web process's ``/metrics`` merges those
texts into its own, each sample labelled with its ``worker`` (``bot/web/ops.py``).
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

disable_created_metrics()  # no *_created series: they double the page and nobody alerts on them

REGISTRY = CollectorRegistry(auto_describe=True)
PREFIX = "persona_studio"

#: redis hash: worker id -> {"at": unix time, "text": Prometheus text of that worker's registry}
WORKER_METRICS_KEY = "persona-studio:worker-metrics"
#: a worker whose last report is older than this is left out of /metrics (it is gone)
WORKER_METRICS_STALE_S = 300.0

JOBS = Counter(
    f"{PREFIX}_jobs",
    "Jobs finished, by kind and outcome (done, failed, cancelled)",
    ["kind", "outcome"],
    registry=REGISTRY,
)
JOB_WAIT = Histogram(
    f"{PREFIX}_job_wait_seconds",
    "From the job's creation (enqueue) to the start of its run",
    ["kind"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
    registry=REGISTRY,
)
JOB_RUN = Histogram(
    f"{PREFIX}_job_run_seconds",
    "Run time of a job that finished (done or failed), by kind",
    ["kind"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 20, 40, 60, 120, 300, 600, 1800, 3600),
    registry=REGISTRY,
)
IDENTITY = Histogram(
    f"{PREFIX}_identity_score",
    "Face-identity similarity of each result image to its persona (0-1)",
    buckets=(0.1, 0.2, 0.3, 0.35, 0.4, 0.5, 0.55, 0.6, 0.7, 0.8, 0.9, 1.0),
    registry=REGISTRY,
)
DELIVERIES = Counter(
    f"{PREFIX}_deliveries",
    "Results sent to a chat platform",
    ["platform"],
    registry=REGISTRY,
)
DELIVERY_FAILURES = Counter(
    f"{PREFIX}_delivery_failures",
    "Sends of a result that failed; outcome: retry (tried again later) or gave_up",
    ["platform", "outcome"],
    registry=REGISTRY,
)
INBOUND = Counter(
    f"{PREFIX}_inbound_events",
    "Events from users, by platform and kind (command, message, reaction)",
    ["platform", "kind"],
    registry=REGISTRY,
)
QUEUE = Gauge(
    f"{PREFIX}_queue_jobs",
    "Unfinished jobs by status, from storage (queued: waiting for a worker; held: waiting for a thread)",
    ["status"],
    registry=REGISTRY,
)
WORKERS = Gauge(
    f"{PREFIX}_workers",
    "arq workers that reported their metrics in the last few minutes",
    registry=REGISTRY,
)
JOB_STAGE = Histogram(
    f"{PREFIX}_job_stage_seconds",
    "Seconds a finished job spent in each stage (text_encode, reference_encode, denoise, vae_decode, "
    "identity_gate, png_encode, storage)",
    ["stage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
GPU_MEMORY = Gauge(
    f"{PREFIX}_gpu_memory_bytes",
    "CUDA memory of this process (torch): allocated now and the peak reserved",
    ["device", "kind"],
    registry=REGISTRY,
)


def observe_finished(kind: str, outcome: str, run_s: float | None = None) -> None:
    """A job's outcome was recorded (engine.jobs.outcomes.finish_job)."""
    JOBS.labels(kind=kind, outcome=outcome).inc()
    if run_s is not None and outcome != "cancelled":
        JOB_RUN.labels(kind=kind).observe(max(run_s, 0.0))


def observe_stages(timings: dict[str, float]) -> None:
    """A job's per-stage seconds (JobResult.timings)."""
    for stage, seconds in timings.items():
        JOB_STAGE.labels(stage=stage).observe(max(float(seconds), 0.0))


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    """``end - start`` in seconds; naive times (SQLite gives them back so) are UTC."""
    if start is None or end is None:
        return None
    start, end = (t if t.tzinfo else t.replace(tzinfo=UTC) for t in (start, end))
    return max((end - start).total_seconds(), 0.0)


def observe_scores(scores: list[Any]) -> None:
    for score in scores:
        if isinstance(score, int | float):
            IDENTITY.observe(float(score))


def update_gpu_memory() -> None:
    """Read CUDA memory from torch when this process has imported it and a GPU is in use."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return
    for index in range(torch.cuda.device_count()):
        device = f"cuda:{index}"
        GPU_MEMORY.labels(device=device, kind="allocated").set(torch.cuda.memory_allocated(index))
        GPU_MEMORY.labels(device=device, kind="max_reserved").set(torch.cuda.max_memory_reserved(index))


def exposition() -> bytes:
    """This process's metrics in the Prometheus text format."""
    return generate_latest(REGISTRY)


async def publish_worker_metrics(redis: Any, worker_id: str) -> None:
    """Write this worker's metrics into :data:`WORKER_METRICS_KEY` (best effort: never raises
    into the job that called it)."""
    update_gpu_memory()
    payload = json.dumps({"at": time.time(), "text": exposition().decode()})
    try:
        await redis.hset(WORKER_METRICS_KEY, worker_id, payload)
    except Exception:  # a redis blip: the next job or health check writes them again
        return


async def read_worker_metrics(redis: Any, *, now: float | None = None) -> dict[str, tuple[float, str]]:
    """Fresh worker reports: worker id -> (unix time of the report, Prometheus text)."""
    now = time.time() if now is None else now
    raw = await redis.hgetall(WORKER_METRICS_KEY)
    found: dict[str, tuple[float, str]] = {}
    for worker, value in raw.items():
        try:
            report = json.loads(value)
            at, text = float(report["at"]), str(report["text"])
        except (ValueError, KeyError, TypeError):
            continue
        if now - at <= WORKER_METRICS_STALE_S:
            name = worker.decode() if isinstance(worker, bytes) else str(worker)
            found[name] = (at, text)
    return found
