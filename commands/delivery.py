"""Result delivery: job events in, actions out to the front end of the job's platform.

Results are in storage before their "done" event is published. A finished job is delivered
when its front end is registered and :meth:`Store.claim_delivery` says this caller is the first
(an atomic update), and marked delivered once the front end's send returned: a result reaches
the user once even when arq retries the job or the event arrives twice. A send that raises is
released and tried again; results finished while no front end listened, and claims left by a
front end that died mid-delivery, are delivered by :meth:`Delivery.deliver_pending` (on start,
and by a sweep). The one window left is a crash between the platform accepting a message and
the confirm write: that result is sent again on the next start (at least once, never lost).

Events are handled in one lane per job (commands.event_lanes): a job's events in order, different
jobs' at once, so one job's slow send (a rate-limited edit) holds up no other job. Progress that a
newer event of its job supersedes while it waits in the lane is not sent. At most
:data:`PROGRESS_SENDS` progress events and :data:`RESULT_SENDS` results are handled at once, each
bound of its own: a result never waits for a progress slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cachetools import LRUCache

from commands.event_lanes import Lanes
from commands.events import Action, Button, ImageOut, Images, PreviewOut, Progress, Reply, Where
from commands.outputs import clip_out, failure_text, failure_text_zh, image_out, turn_images
from commands.regions import describe as describe_region
from commands.training_texts import training_summary
from engine import metrics
from engine.jobs.events import FINISHED_STATES, JobEvent, Queued, Running
from engine.jobs.progress import ProgressBus
from engine.specs import JobKind
from storage.blobs import BlobStore
from storage.job_records import cancel_told
from storage.models import Job, JobStatus, TurnKind, utcnow
from storage.repository import Store

log = logging.getLogger(__name__)

DeliverFn = Callable[[Sequence[Action]], Awaitable[None]]
FinishedHook = Callable[[Job], Awaitable[None]]
SWEEP_INTERVAL_S = 2.0
#: a delivery claim older than this is taken to be hung and is tried again
HUNG_CLAIM_S = 600.0
#: a failing send is retried after 2, 4, 8 ... seconds, and given up (logged) after this many tries
MAX_DELIVERY_ATTEMPTS = 6
RETRY_BASE_S = 2.0
RESULT_BUTTONS = (Button.APPROVE, Button.REGEN, Button.UNDO, Button.CANCEL)
#: events of different jobs handled at once: progress (status edits, previews) and results
PROGRESS_SENDS = 32
RESULT_SENDS = 8


def supersede(waiting: JobEvent, newer: JobEvent) -> JobEvent | None:
    """The one event that stands for a job's event still waiting in its lane and a newer one of
    the job, or None: both are handled. A finished event is never dropped; it replaces progress
    that waits. Newer progress of the same attempt replaces older, keeping the attempt's start
    (a new attempt numbers its previews anew) and the highest preview number seen."""
    if waiting.finished:
        return None
    if newer.finished or not isinstance(waiting, Running):
        return newer  # a "queued" event sends nothing from here
    if isinstance(newer, Running) and not newer.attempt:
        preview = max(waiting.preview or 0, newer.preview or 0) or None
        return newer.model_copy(update={"attempt": waiting.attempt, "preview": preview})
    return None


class _Announced(Queued):
    """A "queued" the commands layer announces (:meth:`Delivery.announce_queued`), handled in
    the job's lane; the queue's own Queued events reach no front end."""


@dataclass
class _Route:
    where: Where
    kind: str
    user_db_id: int | None = None


class Delivery:
    def __init__(self, store: Store, blobs: BlobStore, threaded: frozenset[str] = frozenset()) -> None:
        self.threaded = threaded
        self.store = store
        self.blobs = blobs
        self._deliverers: dict[str, DeliverFn] = {}
        #: the one cache of where a job's messages go (storage is the record)
        self._routes: LRUCache[str, _Route | None] = LRUCache(maxsize=1000)
        self._task: asyncio.Task[None] | None = None
        #: called once a job is seen finished (before its delivery), e.g. to start posts that waited
        self.finished_hooks: list[FinishedHook] = []
        #: one lock per post (or user) while a delivery holds or awaits it: weak values, so the
        #: lock of a post nobody is delivering to is gone (a long run posts to many threads)
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self.sweep_interval_s = SWEEP_INTERVAL_S
        self.retry_base_s = RETRY_BASE_S
        self._started_at = utcnow()
        self._recovered: set[str] = set()
        #: (user's storage id, job id) -> a private link to the job's live page; None: no web studio
        self.live_link: Callable[[int, str], str] | None = None
        self._bus: ProgressBus | None = None
        #: job id -> number of the last live preview handed to its front end (each preview goes out once)
        self._previews_sent: LRUCache[str, int] = LRUCache(maxsize=1000)
        #: jobs whose "running" was handled: a "queued" announced for them later is not sent
        self._running: LRUCache[str, bool] = LRUCache(maxsize=10_000)
        #: job id -> the job's events not handled yet, and the task handling them
        self.lanes: Lanes[str, JobEvent] = Lanes(self._handle, merge=supersede, name="delivery-job")
        self._progress_slots = asyncio.Semaphore(PROGRESS_SENDS)
        self._result_slots = asyncio.Semaphore(RESULT_SENDS)

    def add_deliverer(self, platform: str, deliver: DeliverFn) -> None:
        self._deliverers[platform] = deliver

    def start(self, bus: ProgressBus) -> None:
        self._bus = bus
        if self._task is None:  # subscribed now: an event published right after start() is not missed
            self._task = asyncio.create_task(self._run(bus.subscribe()), name="delivery")

    async def _run(self, events: AsyncIterator[JobEvent]) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._listen(events), name="delivery-listen")
            tasks.create_task(self._sweep(), name="delivery-sweep")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        await self.lanes.close()

    # -- events ------------------------------------------------------------------------------
    async def _listen(self, events: AsyncIterator[JobEvent]) -> None:
        async for event in events:
            self.lanes.put(event.job_id, event)

    async def _handle(self, event: JobEvent) -> None:
        async with self._result_slots if event.finished else self._progress_slots:
            await self.on_event(event)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval_s)
            for platform in list(self._deliverers):
                try:
                    await self.deliver_pending(platform)
                except Exception:
                    log.exception("delivery sweep for %s failed", platform)

    async def on_event(self, event: JobEvent) -> None:
        if event.state in FINISHED_STATES:
            await self.deliver_job(event.job_id)
            return
        if isinstance(event, _Announced):  # the queue's own "queued" events send nothing
            if event.job_id not in self._running:
                await self._send_progress(event.job_id, "queued", position=event.position)
            return
        if isinstance(event, Running):
            self._running[event.job_id] = True
            if event.attempt:  # a new attempt numbers its previews anew
                self._previews_sent.pop(event.job_id, None)
            preview = await self._new_preview(event) if event.preview else None
            await self._send_progress(
                event.job_id,
                "running",
                step=event.step,
                total=event.total,
                eta_s=event.eta_s,
                text=event.note or "",
                preview=preview,
            )

    async def _new_preview(self, event: Running) -> PreviewOut | None:
        """The job's latest live preview if its front end has not had it yet (read from the bus's cache)."""
        sent = self._previews_sent.get(event.job_id, 0)
        if self._bus is None or (event.preview or 0) <= sent:
            return None
        try:
            frame = await self._bus.previews.get(event.job_id)
        except Exception as exc:  # previews are best effort
            log.info("preview of %s not read: %s", event.job_id, exc)
            return None
        if frame is None or frame.seq <= sent:
            return None
        self._previews_sent[event.job_id] = frame.seq
        return PreviewOut(frame.seq, frame.percent, frame.jpeg, frame.width, frame.height, frame.images)

    async def announce_queued(self, job_id: str, position: int | None) -> None:
        """The "queued" progress of a job that the commands layer queued outside a command
        (a held job released when its thread opened or its persona became ready). It goes
        through the job's lane, as its events do: an idle worker may have started the job
        already, and a "queued" sent after its "running" would show the status going back."""
        self.lanes.put(job_id, _Announced.build(job_id, position=position))

    async def _send_progress(self, job_id: str, state: str, **fields: Any) -> None:
        route = await self._route(job_id)
        if route is None or route.where.platform not in self._deliverers:
            return
        if state == "running" and self.live_link is not None and route.user_db_id is not None:
            fields["live_url"] = self.live_link(route.user_db_id, job_id)
        try:
            await self._deliverers[route.where.platform](
                [Progress(where=route.where, job_id=job_id, state=state, **fields)]
            )
        except Exception:
            log.warning("progress update for %s failed", job_id, exc_info=True)

    # -- results -----------------------------------------------------------------------------
    async def deliver_pending(self, platform: str) -> int:
        """Deliver finished, undelivered results of ``platform``; returns how many went out.

        The first call per platform (a front end's start) also takes over claims made before
        this process started: their front end died mid-delivery. Later calls (the sweep) take
        over only claims that have hung for :data:`HUNG_CLAIM_S`.
        """
        if platform in self._recovered:
            reclaim_before = utcnow() - timedelta(seconds=HUNG_CLAIM_S)
        else:
            reclaim_before = self._started_at
            self._recovered.add(platform)
        count = 0
        for job in await self.store.undelivered_jobs(platform):
            count += await self.deliver_job(job.id, reclaim_before=reclaim_before)
        return count

    async def deliver_job(self, job_id: str, *, reclaim_before: datetime | None = None) -> bool:
        job = await self.store.get_job(job_id)
        if job is None or not JobStatus(job.status).finished:
            return False
        for hook in self.finished_hooks:
            try:
                await hook(job)
            except Exception:
                log.exception("after job %s finished: %s failed", job_id, getattr(hook, "__name__", hook))
        deliver = self._deliverers.get(job.platform)
        if deliver is None or job.delivered:
            return False
        # one delivery at a time per post (or user) keeps its results in order without making
        # everyone else wait for a slow send
        async with self._lock(job):
            if not await self.store.claim_delivery(job_id, reclaim_before=reclaim_before):
                return False
            try:
                actions = await self.result_actions(job)
                await deliver(actions)
            except Exception as exc:
                give_up = job.delivery_attempts + 1 >= MAX_DELIVERY_ATTEMPTS
                retry_s = self.retry_base_s * 2**job.delivery_attempts
                await self.store.release_delivery(job_id, retry_after_s=retry_s, give_up=give_up)
                metrics.DELIVERY_FAILURES.labels(job.platform, "gave_up" if give_up else "retry").inc()
                if give_up:
                    log.error("giving up delivering job %s after %d tries: %s", job_id, MAX_DELIVERY_ATTEMPTS, exc)
                else:
                    log.warning("delivery of job %s failed (%s); retrying in %.0f s", job_id, exc, retry_s)
                return False
            await self.store.confirm_delivery(job_id)
            metrics.DELIVERIES.labels(job.platform).inc()
        self._routes.pop(job_id, None)
        return True

    async def settled(self, job_id: str) -> None:
        """Wait until a delivery of this job that is under way has been confirmed (or released)."""
        job = await self.store.get_job(job_id)
        if job is not None:
            async with self._lock(job):
                pass

    def _lock(self, job: Job) -> asyncio.Lock:
        """The post's (or user's) delivery lock; the caller's reference keeps it while it is used."""
        key = f"thread:{job.thread_id}" if job.thread_id is not None else f"user:{job.user_id}"
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    async def result_actions(self, job: Job) -> list[Action]:
        route = await self._route(job.id)
        where = route.where if route else Where(platform=job.platform, user_id="")
        if job.status == JobStatus.CANCELLED:
            if cancel_told(job):  # the answer to the owner's /cancel told them: only the job's status
                return [Progress(where=where, job_id=job.id, state="cancelled", told=True)]
            return [
                Progress(where=where, job_id=job.id, state="cancelled"),
                Reply(where=where, text="Cancelled ❌", text_zh="已取消"),
            ]
        if job.status == JobStatus.FAILED:
            text, text_zh = failure_text(job), failure_text_zh(job)
            failed = Progress(where=where, job_id=job.id, state="failed")
            return [failed, Reply(where=where, text=text, text_zh=text_zh)]
        result = job.result or {}
        done = Progress(where=where, job_id=job.id, state="done")
        if job.kind == "create_persona":
            persona_id = job.spec.get("persona", {}).get("persona_id")
            persona = await self.store.get_persona(int(persona_id))
            key = result.get("reference_key")
            images = (await self._image(key, f"persona-{persona.name}.png", ""),) if key else ()
            mix = ", ".join(f"{name} {weight:.2f}" for name, weight in persona.lora_mix)
            text = f"Persona {persona.name} is ready ({persona.archetype}; mix {mix}; seed {persona.seed})."
            return [done, Images(where=where, job_id=job.id, text=text, images=images)]
        if job.kind == JobKind.TRAIN_PERSONA:
            return [done, await self._training_result(job, where)]
        turn = await self.store.turn_for_job(job.id)
        if turn is None:
            return [done]
        if turn.kind == TurnKind.VIDEO:
            clip = await clip_out(self.blobs, turn)
            if clip is not None:
                poster = await image_out(self.blobs, turn.params["video"]["poster_key"], "poster.png", clip.caption)
                text = f"Video #{turn.id}: {turn.instruction} · {clip.caption} · {result.get('seconds', 0):.1f}s"
                return [
                    done,
                    Images(
                        where=where,
                        turn_id=turn.id,
                        job_id=job.id,
                        text=text,
                        images=(poster,),
                        buttons=RESULT_BUTTONS,
                        clip=clip,
                    ),
                ]
        images = await turn_images(self.blobs, turn, list(result.get("identity_notes") or []))
        what = turn.instruction if turn.kind != TurnKind.GENERATE else "first images"
        text = f"{turn.kind.capitalize()} #{turn.id}: {what} · {result.get('seconds', 0):.1f}s"
        region = describe_region(turn.params)
        if region is not None:
            text += f" · {region}"
            if any(result.get("region_full") or []):
                text += " (the mask covered almost everything: a normal edit)"
        return [
            done,
            Images(where=where, turn_id=turn.id, job_id=job.id, text=text, images=images, buttons=RESULT_BUTTONS),
        ]

    async def _training_result(self, job: Job, where: Where) -> Action:
        persona = await self.store.get_persona(int(job.spec.get("persona", {}).get("persona_id") or 0))
        report = (job.result or {}).get("training") or {}
        version = next((v["version"] for v in persona.versions or [] if v.get("job_id") == job.id), None)
        keys = list((job.result or {}).get("image_keys") or [])[:4]
        images = tuple(
            [await self._image(k, f"training-{persona.name}-{i + 1}.png", "kept") for i, k in enumerate(keys)]
        )
        return Images(where=where, job_id=job.id, text=training_summary(persona.name, report, version), images=images)

    async def _image(self, key: str, filename: str, caption: str) -> ImageOut:
        return await image_out(self.blobs, key, filename, caption)

    async def _route(self, job_id: str) -> _Route | None:
        if job_id in self._routes:
            return self._routes[job_id]
        job = await self.store.get_job(job_id)
        route: _Route | None = None
        if job is not None and job.user_id is not None:
            user = await self.store.get_user(job.user_id)
            if job.thread_id is not None:
                thread = await self.store.get_thread(job.thread_id)
                where = Where(
                    platform=job.platform,
                    user_id=user.platform_user_id,
                    thread_db_id=thread.id,
                    channel_id=thread.channel_id or job.channel_id,
                    thread_id=thread.thread_id,
                )
            else:
                where = Where(platform=job.platform, user_id=user.platform_user_id, channel_id=job.channel_id)
            route = _Route(where=where, kind=job.kind, user_db_id=job.user_id)
            if job.thread_id is not None and where.thread_id is None and job.platform in self.threaded:
                return route  # its platform thread is not bound yet: do not cache
        self._routes[job_id] = route
        return route

    def forget_route(self, job_id: str) -> None:
        self._routes.pop(job_id, None)
