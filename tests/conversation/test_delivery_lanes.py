"""Job events are handled in one lane per job: jobs do not wait for each other's sends, and the
events of one job stay in order (superseded progress of a busy job is coalesced)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from commands.delivery import PROGRESS_SENDS, Delivery, supersede
from commands.events import Action, Progress
from engine.jobs.events import Done, Queued, Running
from engine.jobs.outcomes import finish_job
from engine.jobs.progress import LocalBus
from engine.previews import PreviewFrame
from storage.blobs import BlobStore
from storage.models import JobStatus
from storage.repository import Store

LIMIT_S = 10.0  # only a bound for a test that fails: every wait below ends on an event


@dataclass
class Harness:
    store: Store
    bus: LocalBus
    delivery: Delivery
    #: the progress the front end was handed, per job, in the order it was handed it
    seen: dict[str, list[Progress]] = field(default_factory=dict)
    #: per job: awaited before its progress counts as sent (a slow or stuck platform)
    before_send: dict[str, Callable[[Progress], Awaitable[None]]] = field(default_factory=dict)
    #: (job id, state) -> set once the front end was handed that state of that job
    _handed: dict[tuple[str, str], asyncio.Event] = field(default_factory=dict)

    async def deliver(self, actions: Sequence[Action]) -> None:
        for action in actions:
            if not isinstance(action, Progress):
                continue
            hook = self.before_send.get(action.job_id)
            if hook is not None:
                await hook(action)
            self.seen.setdefault(action.job_id, []).append(action)
            self.handed(action.job_id, action.state).set()

    def handed(self, job_id: str, state: str) -> asyncio.Event:
        return self._handed.setdefault((job_id, state), asyncio.Event())

    async def job(self, job_id: str) -> str:
        owner = await self.store.user("console", "ann")
        await self.store.create_job(job_id, "generate", {}, user_id=owner.id, thread_id=None, platform="console")
        return job_id

    async def running(self, job_id: str, step: int, *, preview: int | None = None) -> None:
        await self.bus.publish(Running.build(job_id, step=step, total=10, preview=preview))

    async def done(self, job_id: str) -> None:
        assert await finish_job(self.store, self.bus, job_id, JobStatus.DONE)

    def steps(self, job_id: str) -> list[tuple[str, int]]:
        return [(p.state, p.step) for p in self.seen.get(job_id, [])]


@pytest.fixture
async def harness(store: Store, tmp_path: Path) -> AsyncIterator[Harness]:
    bus = LocalBus()
    delivery = Delivery(store, BlobStore(tmp_path / "blobs"))
    delivery.sweep_interval_s = 3600.0  # results go out from their events here, not from the sweep
    h = Harness(store, bus, delivery)
    delivery.add_deliverer("console", h.deliver)
    delivery.start(bus)
    yield h
    await delivery.close()


async def wait(event: asyncio.Event) -> None:
    await asyncio.wait_for(event.wait(), LIMIT_S)


def lane_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("delivery-job:") and not t.done()]


async def test_events_published_right_after_start_are_handled(harness: Harness) -> None:
    job = await harness.job("j-early")
    fresh = Delivery(harness.store, harness.delivery.blobs)
    fresh.sweep_interval_s = 3600.0
    fresh.add_deliverer("console", harness.deliver)
    harness.delivery.add_deliverer("console", _ignore)  # only the fresh one hands progress on
    fresh.start(harness.bus)
    try:
        await harness.running(job, 1)  # before the listener's task first ran
        await wait(harness.handed(job, "running"))
    finally:
        await fresh.close()


async def _ignore(actions: Sequence[Action]) -> None:
    return None


async def test_a_result_goes_out_while_another_jobs_progress_send_hangs(harness: Harness) -> None:
    slow, quick = await harness.job("j-slow"), await harness.job("j-quick")
    platform_stuck = asyncio.Event()

    async def stuck(progress: Progress) -> None:
        if progress.state == "running":
            await platform_stuck.wait()  # a rate-limited edit of the status message

    harness.before_send[slow] = stuck
    await harness.running(slow, 1)
    await harness.done(quick)
    await wait(harness.handed(quick, "done"))
    await harness.delivery.settled(quick)
    assert (await harness.store.get_job(quick)).delivered
    assert slow not in harness.seen  # still stuck
    platform_stuck.set()
    await wait(harness.handed(slow, "running"))


async def test_a_result_does_not_wait_for_a_progress_slot(harness: Harness) -> None:
    stuck_jobs = [await harness.job(f"j-stuck-{n}") for n in range(PROGRESS_SENDS + 1)]
    quick = await harness.job("j-quick")
    stuck, all_slots_taken, never = 0, asyncio.Event(), asyncio.Event()

    async def hangs(progress: Progress) -> None:
        nonlocal stuck
        stuck += 1
        if stuck == PROGRESS_SENDS:
            all_slots_taken.set()
        await never.wait()

    harness.before_send.update(dict.fromkeys(stuck_jobs, hangs))
    for job in stuck_jobs[:PROGRESS_SENDS]:
        await harness.running(job, 1)
    await wait(all_slots_taken)
    await harness.running(stuck_jobs[-1], 1)  # waits for a slot
    await harness.done(quick)
    await wait(harness.handed(quick, "done"))
    assert stuck == PROGRESS_SENDS


async def test_one_jobs_events_stay_in_order_while_other_jobs_are_busy(harness: Harness) -> None:
    job, busy, other = await harness.job("j-ordered"), await harness.job("j-busy"), await harness.job("j-other")
    never = asyncio.Event()

    async def uneven(progress: Progress) -> None:  # sends that take a different number of turns of the loop
        for _ in range(progress.step % 3):
            await asyncio.sleep(0)

    async def hangs(progress: Progress) -> None:
        await never.wait()

    harness.before_send.update({job: uneven, other: uneven, busy: hangs})
    await harness.running(busy, 1)
    for step in range(1, 21):
        await harness.running(job, step)
        await harness.running(other, step)
        await asyncio.sleep(0)  # lets the listener interleave its lanes with publishing (no wait on anything)
    await harness.done(job)
    await wait(harness.handed(job, "done"))
    states = harness.steps(job)
    assert states[-1] == ("done", 0) and [s for s, _ in states].count("done") == 1
    running = [step for state, step in states if state == "running"]
    assert running and running == sorted(set(running))  # never an older step after a newer one


async def test_superseded_progress_of_a_busy_job_is_coalesced(harness: Harness) -> None:
    job, marker = await harness.job("j-coalesced"), await harness.job("j-marker")
    first_sending, platform_free = asyncio.Event(), asyncio.Event()

    async def first_send_waits(progress: Progress) -> None:
        if progress.step == 1:
            first_sending.set()
            await platform_free.wait()

    harness.before_send[job] = first_send_waits
    await harness.running(job, 1)
    await wait(first_sending)
    frame = PreviewFrame(job_id=job, seq=1, step=2, total=10, jpeg=b"jpeg", width=8, height=8)
    await harness.bus.previews.put(frame)
    await harness.running(job, 2, preview=1)
    for step in range(3, 11):
        await harness.running(job, step)  # the preview's number is not known where these were made
    await harness.running(marker, 1)  # handled after the listener took every event above
    await wait(harness.handed(marker, "running"))
    platform_free.set()
    await wait(harness.handed(job, "running"))
    await harness.delivery.lanes.join()
    assert harness.steps(job) == [("running", 1), ("running", 10)]
    newest = harness.seen[job][-1]
    assert newest.preview is not None and newest.preview.seq == 1  # the preview of step 2 was not lost


async def test_a_result_replaces_the_progress_still_waiting_in_its_lane(harness: Harness) -> None:
    job = await harness.job("j-finished")
    first_sending, platform_free = asyncio.Event(), asyncio.Event()

    async def first_send_waits(progress: Progress) -> None:
        if progress.step == 1:
            first_sending.set()
            await platform_free.wait()

    harness.before_send[job] = first_send_waits
    await harness.running(job, 1)
    await wait(first_sending)
    for step in range(2, 6):
        await harness.running(job, step)
    await harness.done(job)
    platform_free.set()
    await wait(harness.handed(job, "done"))
    assert harness.steps(job) == [("running", 1), ("done", 0)]


async def test_no_lane_is_left_behind(harness: Harness) -> None:
    jobs = [await harness.job(f"j-{n}") for n in range(20)]
    for job in jobs:
        await harness.running(job, 1)
        await harness.running(job, 2)
        await harness.done(job)
    for job in jobs:
        await wait(harness.handed(job, "done"))
    await asyncio.wait_for(harness.delivery.lanes.join(), LIMIT_S)
    assert len(harness.delivery.lanes) == 0
    assert lane_tasks() == []
    assert dict(harness.delivery._locks) == {}  # no post's (or user's) delivery lock outlives its use


async def test_close_cancels_the_lanes(harness: Harness) -> None:
    job = await harness.job("j-stuck")
    sending, never = asyncio.Event(), asyncio.Event()

    async def hangs(progress: Progress) -> None:
        sending.set()
        await never.wait()

    harness.before_send[job] = hangs
    await harness.running(job, 1)
    await wait(sending)
    assert len(harness.delivery.lanes) == 1 and len(lane_tasks()) == 1
    await harness.delivery.close()
    assert len(harness.delivery.lanes) == 0 and lane_tasks() == []


async def test_a_failing_lane_does_not_stop_the_others(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    broken, fine = await harness.job("j-broken"), await harness.job("j-fine")

    def link(user_id: int, job_id: str) -> str:
        if job_id == broken:
            raise RuntimeError("no link for this one")
        return f"https://studio.example/{job_id}"

    harness.delivery.live_link = link
    await harness.running(broken, 1)
    await harness.running(fine, 1)
    await harness.running(broken, 2)
    await harness.done(broken)
    await wait(harness.handed(fine, "running"))
    await wait(harness.handed(broken, "done"))  # the lane went on after its failed events
    assert "no link for this one" in caplog.text


async def test_a_released_jobs_queued_announcement_keeps_its_place_in_the_lane(harness: Harness) -> None:
    """A held job released (its thread opened, its persona ready) is announced "queued" just after
    it was enqueued; an idle worker may start it at once. The announcement goes through the
    job's lane: sent before the job's "running", never after it (a status that went back)."""
    job = await harness.job("j-released")
    sending, platform_slow = asyncio.Event(), asyncio.Event()

    async def slow(progress: Progress) -> None:
        if progress.state == "queued":
            sending.set()
            await platform_slow.wait()

    harness.before_send[job] = slow
    announcing = asyncio.create_task(harness.delivery.announce_queued(job, 3))
    await wait(sending)
    await harness.running(job, 1)  # the worker started it while the announcement was being sent
    platform_slow.set()
    await asyncio.wait_for(announcing, LIMIT_S)
    await wait(harness.handed(job, "running"))
    assert [(p.state, p.position) for p in harness.seen[job]] == [("queued", 3), ("running", None)]


async def test_a_queued_announcement_after_the_job_runs_is_not_sent(harness: Harness) -> None:
    job = await harness.job("j-started")
    await harness.running(job, 1)
    await wait(harness.handed(job, "running"))
    await harness.delivery.announce_queued(job, 0)  # came too late: the job runs already
    await harness.done(job)
    await wait(harness.handed(job, "done"))
    assert harness.steps(job) == [("running", 1), ("done", 0)]


def test_which_waiting_event_a_newer_one_supersedes() -> None:
    start = Running.build("j", attempt=2, preview=3)
    step = Running.build("j", step=4, total=10)
    merged = supersede(start, step)
    assert merged is not None and (merged.step, merged.attempt, merged.preview) == (4, 2, 3)
    assert supersede(step, Running.build("j", attempt=3)) is None  # a new attempt numbers its previews anew
    done = Done.build("j")
    assert supersede(step, done) is done and supersede(Queued.build("j"), step) is step
    assert supersede(done, Running.build("j")) is None  # a result is never dropped
