"""Issue 20 item 7: two ``persona-studio worker`` started side by side, nothing else set, share the
host's cores (each counts the live workers of its host through their alive keys and sets torch's
threads to its share); ``WORKERS_PER_HOST`` / ``ENGINE_THREADS`` stay an override."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from engine.jobs.core_share import CoreShare, host_of
from engine.jobs.progress import LocalBus
from engine.jobs.runner import JobRunner
from engine.specs import JobKind, JobSpec, PersonaSpec
from storage.repository import Store
from storage.settings import load_settings
from tests.fakes.engine import FakeEngine
from tests.queue.conftest import WorkerProcess, arq_settings


async def _logged(worker: WorkerProcess, text: str, limit_s: float = 30.0, *, nth: int = 1) -> str:
    """The ``nth`` log line of ``worker`` that contains ``text`` (waits for it, bounded)."""
    deadline = asyncio.get_running_loop().time() + limit_s
    while True:
        found = [line for line in list(worker.lines) if text in line]
        if len(found) >= nth:
            return found[nth - 1]
        if asyncio.get_running_loop().time() > deadline or worker.process.poll() is not None:
            raise AssertionError(f"never logged {text!r}:\n" + "\n".join(worker.lines[-20:]))
        await asyncio.sleep(0.1)


@pytest.mark.slow
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores to share")
async def test_two_workers_on_one_host_share_its_cores(
    tmp_path: Path, shared_dirs: dict[str, Path], redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WORKERS_PER_HOST", raising=False)
    monkeypatch.delenv("ENGINE_THREADS", raising=False)
    cores = os.cpu_count() or 1
    settings = arq_settings(tmp_path, shared_dirs, redis_url)
    first = WorkerProcess(settings, tmp_path)
    second = None
    try:
        await first.ready()
        await _logged(first, f"1 worker(s) on this host, {cores} cores: torch threads = {cores}")
        second = WorkerProcess(settings, tmp_path)
        await second.ready()
        share = cores // 2
        await _logged(second, f"2 worker(s) on this host, {cores} cores: torch threads = {share}")
        await _logged(first, f"2 worker(s) on this host, {cores} cores: torch threads = {share}")
        second.stop()  # its alive key goes: the first takes every core again
        # the first worker's third share line (its first said the same: one alone on the host)
        again = await _logged(first, "core share", limit_s=30, nth=3)
        assert f"1 worker(s) on this host, {cores} cores: torch threads = {cores}" in again
    finally:
        if second is not None:
            second.stop()
        first.stop()


def test_the_settings_stay_an_override() -> None:
    assert not CoreShare(load_settings(workers_per_host=2), "h:1").enabled
    assert not CoreShare(load_settings(engine_threads=3), "h:1").enabled
    share = CoreShare(load_settings(), "h:1", cores=16)
    assert share.enabled and share.wanted == 16
    share.observe(3)
    assert share.wanted == 5
    assert host_of("box-a:1234") == "box-a" and host_of("10.0.0.1:77") == "10.0.0.1"


class _ThreadCount(FakeEngine):
    """Records torch's thread count in the thread that runs the job."""

    def run(self, spec, on_progress=None, cancel=None):  # type: ignore[no-untyped-def, override]
        import torch

        self.seen = torch.get_num_threads()
        return super().run(spec, on_progress, cancel)


async def test_the_share_reaches_the_engines_thread(store: Store) -> None:
    """torch keeps its thread count per thread (OpenMP): the share set from the event loop (the
    idle alive beat) must still reach the thread that already ran the engine at the load's count."""
    import torch

    before = torch.get_num_threads()
    engine_thread = ThreadPoolExecutor(max_workers=1)
    asyncio.get_running_loop().set_default_executor(engine_thread)  # every job runs in this one thread

    def load_at_every_core() -> int:  # the engine's load, before a second worker came up
        torch.set_num_threads(2)
        torch.ones(64, 64) @ torch.ones(64, 64)
        return torch.get_num_threads()

    try:
        assert await asyncio.to_thread(load_at_every_core) == 2
        share = CoreShare(load_settings(), "h:1", cores=2)
        share.observe(2)  # a second worker of this host is alive
        share.apply()  # in the loop's thread, as the idle beat does
        assert torch.get_num_threads() == 1
        owner = await store.user("console", "ann")
        spec = JobSpec(job_id="j1", kind=JobKind.GENERATE, persona=PersonaSpec(archetype="sweet"))
        await store.create_job(
            spec.job_id, spec.kind, spec.model_dump(mode="json"), user_id=owner.id, thread_id=None, platform="console"
        )
        engine = _ThreadCount()
        await JobRunner(engine, store, LocalBus(), in_engine_thread=share.apply).execute(spec.model_dump(mode="json"))
        assert engine.seen == 1
    finally:
        torch.set_num_threads(before)
        engine_thread.submit(torch.set_num_threads, before).result()
