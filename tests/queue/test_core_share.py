"""Issue 20 item 7: two ``persona-studio worker`` started side by side, nothing else set, share the
host's cores (each counts the live workers of its host through their alive keys and sets torch's
threads to its share); ``WORKERS_PER_HOST`` / ``ENGINE_THREADS`` stay an override."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from engine.jobs.core_share import CoreShare, host_of
from storage.settings import load_settings
from tests.queue.conftest import WorkerProcess, arq_settings

pytestmark = pytest.mark.slow


async def _logged(worker: WorkerProcess, text: str, limit_s: float = 30.0) -> str:
    """The first log line of ``worker`` that contains ``text`` (waits for it, bounded)."""
    deadline = asyncio.get_running_loop().time() + limit_s
    while True:
        found = next((line for line in list(worker.lines) if text in line), None)
        if found is not None:
            return found
        if asyncio.get_running_loop().time() > deadline or worker.process.poll() is not None:
            raise AssertionError(f"never logged {text!r}:\n" + "\n".join(worker.lines[-20:]))
        await asyncio.sleep(0.1)


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
        await _logged(first, f"torch threads = {cores}", limit_s=30)
        assert len([line for line in first.lines if "core share" in line]) == 3
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
