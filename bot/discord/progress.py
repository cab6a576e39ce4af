"""Job progress on Discord: one status message per job, edited at most every ~1.5 s.

Discord rate-limits edits of one message, so :class:`ProgressBoard` keeps the latest update of a
job and shows it when the interval has passed; a change of state is shown at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import discord
from cachetools import LRUCache

from commands.events import Progress, Where
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


def render_progress(progress: Progress, elapsed_s: float | None = None) -> str:
    """The text of a job's status message."""
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
        return f"🎨 Working `{bar}` · {format_eta(progress.eta_s)}{extra}"
    if state == "done":
        took = f" in {elapsed_s:.0f} s" if elapsed_s is not None and elapsed_s >= 1 else ""
        return f"✅ Done{took} — the result is below.{extra}"
    if state == "failed":
        reason = progress.text or "the job stopped with an error"
        return f"❌ Failed: {reason}. Send the instruction again, or press 🔁 to retry with a new seed."
    if state == "cancelled":
        return f"🚫 Cancelled.{extra}"
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


class ProgressBoard:
    """One status message per job, edited at most every ``interval`` seconds.

    The latest update wins; a change of state (queued -> running -> done) is shown at once.
    Updates that arrive out of order (a late "queued" after "running") are ignored.
    """

    def __init__(
        self,
        send: Callable[[Where, str], Awaitable[discord.Message]],
        edit: Callable[[int, int, str], Awaitable[None]],
        interval: float = PROGRESS_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        self._edit = edit
        self.interval = interval
        self._clock = clock
        self._jobs: dict[str, _JobStatus] = {}
        self._finished: LRUCache[str, None] = LRUCache(REMEMBERED_FINISHED)  # late updates of these are dropped

    async def update(self, progress: Progress) -> None:
        if progress.job_id in self._finished:
            return
        job = self._jobs.setdefault(progress.job_id, _JobStatus(where=progress.where, started=self._clock()))
        async with job.lock:
            if job.state and _STATE_RANK.get(progress.state, 1) < _STATE_RANK.get(job.state, 1):
                return
            finished = progress.state in FINISHED_STATES
            if job.message_id is None:
                if not finished:
                    message = await self._send(progress.where, render_progress(progress))
                    job.channel_id, job.message_id = message.channel.id, message.id
                    job.state, job.last_edit = progress.state, self._clock()
            elif progress.state != job.state or finished or self._clock() - job.last_edit >= self.interval:
                await self._show(job, progress)
            else:
                job.pending = progress
                if job.timer is None:
                    delay = self.interval - (self._clock() - job.last_edit)
                    job.timer = asyncio.create_task(self._flush_later(progress.job_id, job, delay))
            if finished:
                self._forget(progress.job_id, job)

    async def _show(self, job: _JobStatus, progress: Progress) -> None:
        if job.timer is not None and job.timer is not asyncio.current_task():
            job.timer.cancel()
        job.timer = None
        job.pending = None
        elapsed = self._clock() - job.started if progress.state == "done" else None
        job.state, job.last_edit = progress.state, self._clock()
        assert job.channel_id is not None and job.message_id is not None
        try:
            await self._edit(job.channel_id, job.message_id, render_progress(progress, elapsed))
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
