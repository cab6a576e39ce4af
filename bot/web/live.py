"""The live page of one job (``/studio/jobs/<id>``): progress bar, ETA and the latest live preview,
updated by server-sent events, with a short-poll fallback (``state.json`` every 2 s).

The viewer must own the job (or be an admin); anyone else gets 404, like a job that does not exist.
The stream sends one JSON snapshot per change (state, step, total, ETA, the preview's number) and
ends when the job finishes; the browser then loads the preview JPEG (``preview.jpg``) from the
transient cache on the progress bus (engine.previews), never from storage. A done job's page
links to its post; a cancelled one keeps its last preview, marked cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import web

from bot.web.auth import viewer_of
from bot.web.state import STATE, WebState
from engine.jobs.events import FINISHED_STATES, AnyJobEvent, Queued, Running
from storage.models import Job, JobStatus

#: seconds between keep-alive comments on an idle stream (each also re-reads the job from storage)
KEEPALIVE_S = 5.0
NO_STORE = "no-store"


async def _own_job(request: web.Request) -> tuple[WebState, Job]:
    state = request.app[STATE]
    viewer = await viewer_of(request)
    job = await state.store.get_job(request.match_info["job_id"])
    if job is None or (job.user_id != viewer.user.id and not viewer.admin):
        raise web.HTTPNotFound(text="No such job.")
    return state, job


async def snapshot(state: WebState, job: Job, event: AnyJobEvent | None = None) -> dict[str, Any]:
    """What the page shows of ``job``: its stored outcome once finished, else its latest event
    (``event``, or the bus's last one) and the number of its latest preview."""
    data: dict[str, Any] = {"job": job.id, "kind": job.kind, "post": job.thread_id, "state": str(job.status)}
    data.update(step=0, total=0, eta_s=None, position=None, note=None, preview=None, error=None)
    with contextlib.suppress(Exception):  # redis away: storage's view alone
        event = event or await state.bus.last(job.id)
    if isinstance(event, Running):
        data.update(state="running", step=event.step, total=event.total, eta_s=event.eta_s, note=event.note)
    elif isinstance(event, Queued) and not JobStatus(job.status).finished:
        data.update(state="queued", position=event.position)
    if JobStatus(job.status).finished:
        data.update(state=str(job.status), error=job.error, eta_s=None)
        if job.status == JobStatus.DONE:
            data.update(step=data["total"] or 1, total=data["total"] or 1)
    if isinstance(event, Running) and event.preview is not None and not JobStatus(job.status).finished:
        data["preview"] = event.preview  # the event names the latest preview: no need to read it
    elif job.status != JobStatus.DONE:  # a done job's result replaces its preview
        with contextlib.suppress(Exception):
            frame = await state.bus.previews.get(job.id)
            data["preview"] = frame.seq if frame is not None else None
    data["finished"] = data["state"] in FINISHED_STATES
    return data


#: the studio's policy (bot.web.server.CONTENT_SECURITY_POLICY) plus its inline script and its fetches
LIVE_PAGE_POLICY = (
    "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


async def page(request: web.Request) -> web.Response:
    state, job = await _own_job(request)
    viewer = await viewer_of(request)
    start = json.dumps(await snapshot(state, job)).replace("<", "\\u003c")  # safe inside <script>
    response = state.render("job.html", viewer=viewer, job=job, start=start)
    # the one page with a script (inline, its own) that reads this server (events, state.json)
    response.headers["Content-Security-Policy"] = LIVE_PAGE_POLICY
    return response


async def state_json(request: web.Request) -> web.Response:
    """The short-poll fallback: the snapshot as JSON."""
    state, job = await _own_job(request)
    response = web.json_response(await snapshot(state, job))
    response.headers["Cache-Control"] = NO_STORE
    return response


async def preview(request: web.Request) -> web.Response:
    """The job's latest live preview (404 when it has none, or is done)."""
    state, job = await _own_job(request)
    frame = None if job.status == JobStatus.DONE else await state.bus.previews.get(job.id)
    if frame is None:
        raise web.HTTPNotFound(text="No preview.")
    return web.Response(body=frame.jpeg, content_type="image/jpeg", headers={"Cache-Control": NO_STORE})


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: a snapshot now and at every change of the job, until it finishes."""
    state, job = await _own_job(request)
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": NO_STORE, "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    changes: asyncio.Queue[AnyJobEvent] = asyncio.Queue()
    stream = state.bus.subscribe()  # registered before the first snapshot: no change falls between

    async def pump() -> None:
        async for event in stream:
            if event.job_id == job.id:
                changes.put_nowait(event)

    pumping = asyncio.create_task(pump(), name=f"live-{job.id}")
    try:
        sent = await snapshot(state, job)
        await _send(response, sent)
        while not sent["finished"]:
            try:
                event: AnyJobEvent | None = await asyncio.wait_for(changes.get(), KEEPALIVE_S)
            except TimeoutError:
                event = None
                await response.write(b": keep-alive\n\n")
            fresh = await state.store.get_job(job.id) or job
            if event is None and not JobStatus(fresh.status).finished:
                continue
            current = await snapshot(state, fresh, event if event is not None and not event.finished else None)
            if current != sent:
                sent = current
                await _send(response, sent)
    except (ConnectionResetError, asyncio.CancelledError):
        pass  # the browser went away
    finally:
        pumping.cancel()
        with contextlib.suppress(BaseException):
            await pumping
    return response


async def _send(response: web.StreamResponse, data: dict[str, Any]) -> None:
    await response.write(f"data: {json.dumps(data)}\n\n".encode())
