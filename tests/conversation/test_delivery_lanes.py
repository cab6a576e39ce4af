"""How the delivery takes job events from the bus."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from commands.delivery import Delivery
from commands.events import Action, Progress
from engine.jobs.events import Running
from engine.jobs.outcomes import finish_job
from engine.jobs.progress import LocalBus
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
