"""Job progress on Discord: one status message per job, edited at most every ~1.5 s per channel.

Discord rate-limits message edits per channel, so :class:`ProgressBoard` keeps the latest update
of a job and shows it when the interval has passed since the last edit in that channel (discord.py
itself reads the X-RateLimit headers and waits out a bucket); a change of state is shown at once.

A running job's status message also carries its latest live preview (engine.previews): the image
is attached by the next edit, so previews are never sent more often than edits. The message is the
bot's own, so it can be edited long after the interaction token's 15 minutes. When the result
arrives the preview is removed (the result is posted below); a cancelled job keeps its last
preview, marked cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import discord
from cachetools import LRUCache

from commands.events import PreviewOut, Progress, Where
from commands.texts import progress_bar
from engine.jobs.events import FINISHED_STATES

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 1.5
REMEMBERED_FINISHED = 2000
_STATE_RANK = {"queued": 0, "running": 1, **dict.fromkeys(FINISHED_STATES, 2)}


def format_eta(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "ETA …"
    seconds = round(seconds)
    if seconds < 60:
        return f"ETA {seconds} s"
    return f"ETA {seconds // 60} min {seconds % 60:02d} s"


def render_progress(progress: Progress, elapsed_s: float | None = None, preview: PreviewOut | None = None) -> str:
    """The text of a job's status message; ``preview``: the live preview it shows."""
    extra = f"\n{progress.text}" if progress.text else ""
    state = progress.state
    if state == "queued":
        if progress.position is None:
            where = "waiting for a free worker"
        elif progress.position <= 0:
            where = "you are next"
        else:
            where = f"{progress.position} job{'s' if progress.position != 1 else ''} ahead of yours"
        return f"⏳ Queued — {where}.{extra}"
    if state == "running":
        if progress.total <= 0:
            return f"🎨 Starting…{extra}"
        bar = progress_bar(progress.step, progress.total)
        seen = f" · 👁 preview at {preview.percent} %" if preview is not None else ""
        return f"🎨 Working `{bar}` · {format_eta(progress.eta_s)}{seen}{extra}"
    if state == "done":
        took = f" in {elapsed_s:.0f} s" if elapsed_s is not None and elapsed_s >= 1 else ""
        return f"✅ Done{took} — the result is below.{extra}"
    if state == "failed":
        # what the user can do (🔁 only where a new seed can help) is in the reply sent with it
        reason = progress.text or "the job stopped with an error (the message below says more)"
        return f"❌ Failed: {reason}."
    if state == "cancelled":
        last = f" — its last preview (at {preview.percent} %) stays here" if preview is not None else ""
        return f"🚫 Cancelled{last}.{extra}"
    return f"{state}{extra}"


@dataclass
class _JobStatus:
    where: Where
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    channel_id: int | None = None
    message_id: int | None = None
    state: str = ""
    started: float = 0.0
    last_edit: float = 0.0
    pending: Progress | None = None
    timer: asyncio.Task[None] | None = None
    #: the latest live preview not yet on the message, and the one on it
    preview: PreviewOut | None = None
    shown: PreviewOut | None = None


class ProgressBoard:
    """One status message per job, edited at most every ``interval`` seconds.

    The latest update wins; a change of state (queued -> running -> done) is shown at once.
    Updates that arrive out of order (a late "queued" after "running") are ignored.
    """

    def __init__(
        self,
        send: Callable[[Where, str], Awaitable[discord.Message]],
        edit: Callable[..., Awaitable[None]],
        interval: float = PROGRESS_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        #: ``edit(channel id, message id, text, image=None | JPEG bytes, clear=False)``
        self._edit = edit
        self.interval = interval
        self._clock = clock
        self._jobs: dict[str, _JobStatus] = {}
        #: channel id -> when a status message in it was last edited (the edit bucket is per channel)
        self._channel_edits: LRUCache[int, float] = LRUCache(REMEMBERED_FINISHED)
        self._finished: LRUCache[str, None] = LRUCache(REMEMBERED_FINISHED)  # late updates of these are dropped

    async def update(self, progress: Progress) -> None:
        if progress.job_id in self._finished:
            return
        job = self._jobs.setdefault(progress.job_id, _JobStatus(where=progress.where, started=self._clock()))
        async with job.lock:
            if job.state and _STATE_RANK.get(progress.state, 1) < _STATE_RANK.get(job.state, 1):
                return
            if progress.preview is not None:
                job.preview = progress.preview  # the newest wins; it rides on the next edit
            finished = progress.state in FINISHED_STATES
            if job.message_id is None:
                if not finished:
                    message = await self._send(progress.where, render_progress(progress))
                    job.channel_id, job.message_id = message.channel.id, message.id
                    job.state, job.last_edit = progress.state, self._clock()
                    self._channel_edits[message.channel.id] = job.last_edit
            elif progress.state != job.state or finished or self._clock() - self._last_edit(job) >= self.interval:
                await self._show(job, progress)
            else:
                job.pending = progress
                if job.timer is None:
                    delay = self.interval - (self._clock() - self._last_edit(job))
                    job.timer = asyncio.create_task(self._flush_later(progress.job_id, job, delay))
            if finished:
                self._forget(progress.job_id, job)

    def _last_edit(self, job: _JobStatus) -> float:
        """When this job's message, or any status message in its channel, was last edited."""
        return max(job.last_edit, self._channel_edits.get(job.channel_id or 0, 0.0))

    async def _show(self, job: _JobStatus, progress: Progress) -> None:
        if job.timer is not None and job.timer is not asyncio.current_task():
            job.timer.cancel()
        job.timer = None
        job.pending = None
        elapsed = self._clock() - job.started if progress.state == "done" else None
        job.state, job.last_edit = progress.state, self._clock()
        assert job.channel_id is not None and job.message_id is not None
        self._channel_edits[job.channel_id] = job.last_edit
        image, clear = None, False
        if progress.state == "running" and job.preview is not None:
            image, job.shown, job.preview = job.preview.jpeg, job.preview, None
        elif progress.state in ("done", "failed") and job.shown is not None:
            clear = True  # the result (or the error) replaces the preview
        shown = job.shown if progress.state in ("running", "cancelled") else None
        try:
            await self._edit(
                job.channel_id, job.message_id, render_progress(progress, elapsed, shown), image=image, clear=clear
            )
        except discord.NotFound:
            job.message_id = None  # someone deleted it: the next update posts a new one

    async def _flush_later(self, job_id: str, job: _JobStatus, delay: float) -> None:
        await asyncio.sleep(max(0.0, delay))
        async with job.lock:
            if job.timer is not asyncio.current_task():
                return
            job.timer = None
            if job.pending is not None and job.message_id is not None:
                try:
                    await self._show(job, job.pending)
                except discord.HTTPException:
                    log.warning("progress edit for job %s failed", job_id, exc_info=True)

    def _forget(self, job_id: str, job: _JobStatus) -> None:
        if job.timer is not None:
            job.timer.cancel()
        self._jobs.pop(job_id, None)
        self._finished[job_id] = None

    async def close(self) -> None:
        for job in self._jobs.values():
            if job.timer is not None:
                job.timer.cancel()
        self._jobs.clear()
