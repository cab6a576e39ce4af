"""The admin view (users in ADMIN_IDS, by their own signed link): the queue — waiting, running,
per worker — recent failures with their errors, and a cancel button per unfinished job."""

from __future__ import annotations

import time

from aiohttp import web
from yarl import URL

from bot.web.auth import admin_of
from bot.web.state import STATE
from engine import metrics
from engine.jobs.progress import RedisBus
from storage.models import JobStatus


async def admin(request: web.Request) -> web.Response:
    state = request.app[STATE]
    viewer = await admin_of(request)
    counts = await state.reads.job_counts()
    waiting = await state.reads.jobs_in((JobStatus.QUEUED, JobStatus.HELD))
    running = await state.reads.jobs_in((JobStatus.RUNNING,))
    failures = await state.reads.recent_failures()
    positions = {}
    if state.queue is not None:
        for job in waiting:
            try:
                positions[job.id] = await state.queue.position(job.id)
            except Exception:  # redis is down: the page still shows storage's view
                positions[job.id] = None
    worker_of: dict[str, str] = {}
    workers: list[dict[str, object]] = []
    if state.redis is not None:
        bus = RedisBus(state.redis)
        try:
            for job in running:
                last = await bus.last(job.id)
                worker_of[job.id] = (last.worker if last is not None else None) or "?"
            reports = await metrics.read_worker_metrics(state.redis)
        except Exception:
            reports = {}
        now = time.time()
        for name, (at, _) in sorted(reports.items()):
            jobs = [job.id for job in running if worker_of.get(job.id) == name]
            workers.append({"name": name, "seen_s": round(now - at), "running": jobs})
    return state.render(
        "admin.html",
        viewer=viewer,
        counts=counts,
        waiting=waiting,
        running=running,
        failures=failures,
        positions=positions,
        worker_of=worker_of,
        workers=workers,
        csrf=viewer.csrf(state.secret),
        notice=request.query.get("notice", ""),
    )


async def cancel(request: web.Request) -> web.Response:
    state = request.app[STATE]
    viewer = await admin_of(request)
    form = await request.post()
    if form.get("csrf") != viewer.csrf(state.secret):
        raise web.HTTPForbidden(text="This form has expired; reload the admin page.")
    job_id = request.match_info["job_id"]
    cancelled = await state.cancel_job(job_id)
    notice = f"cancelling {job_id}" if cancelled else f"{job_id} had already finished"
    raise web.HTTPSeeOther(str(URL("/studio/admin").with_query(notice=notice)))
