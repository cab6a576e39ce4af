"""Fixtures for the arq queue: a worker task in this process on the shared tiny engine, an app
(front end side) on the same redis and database, and helpers to wait on bus events."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bot.app import App, build_app
from bot.console import ConsoleFrontEnd
from engine.jobs.events import AnyJobEvent, Running
from engine.jobs.progress import ProgressBus
from storage.settings import Settings
from tests.conversation.conftest import app_settings, shared_dirs, tiny_engine
from tests.conversation.helpers import run

__all__ = ["shared_dirs", "tiny_engine"]  # the conversation tests' session fixtures, used here too


@dataclass
class Recorder:
    """Every event a bus delivers, from the moment of subscription; wait for one that matches."""

    bus: ProgressBus
    events: list[AnyJobEvent] = field(default_factory=list)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _task: asyncio.Task[None] | None = None

    async def start(self) -> Recorder:
        """Subscribe, and return once the subscription is live (a probe event came back)."""
        self._task = asyncio.create_task(self._run())
        probe = f"probe-{uuid.uuid4().hex}"
        for _ in range(200):
            await self.bus.publish(Running.build(probe))  # a job no front end knows
            with contextlib.suppress(TimeoutError):
                await self.wait_for(lambda e: e.job_id == probe, limit_s=0.1)
                return self
        raise TimeoutError("the bus subscription never became live")

    async def _run(self) -> None:
        async for event in self.bus.subscribe():
            async with self._changed:
                self.events.append(event)
                self._changed.notify_all()

    def of(self, job_id: str) -> list[AnyJobEvent]:
        return [e for e in self.events if e.job_id == job_id]

    async def wait_for(self, match: Callable[[AnyJobEvent], bool], limit_s: float = 60.0) -> AnyJobEvent:
        async def find() -> AnyJobEvent:
            async with self._changed:
                while True:
                    for event in self.events:
                        if match(event):
                            return event
                    await self._changed.wait()

        return await asyncio.wait_for(find(), limit_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


def arq_settings(tmp_path: Path, dirs: dict[str, Path], redis_url: str, **overrides: Any) -> Settings:
    return app_settings(tmp_path, dirs, redis_url=redis_url, **overrides)


@contextlib.asynccontextmanager
async def worker_task(
    settings: Settings, engine: Any, *, queues: tuple[str, ...] | None = None, worker_id: str | None = None
) -> AsyncIterator[asyncio.Task[None]]:
    """``engine.jobs.worker.serve`` in a task of this process (shares the loaded tiny engine); on
    ``queues`` only (default: WORKER_QUEUES, all), named ``worker_id`` (default: this process)."""
    from engine.jobs.worker import WORKER_ID, WorkerState, serve

    state = WorkerState(settings, engine=engine, worker_id=worker_id or WORKER_ID, queues=queues)
    task = asyncio.create_task(serve(state), name="test-arq-worker")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def wait_health(redis_url: str, limit_s: float = 60.0) -> str:
    """Until a worker has written arq's health-check key (it does so on its first poll)."""
    from engine.jobs.worker_health import health

    deadline = asyncio.get_running_loop().time() + limit_s
    while True:
        line = await health(redis_url)
        if line:
            return line
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("no worker reported healthy")
        await asyncio.sleep(0.05)


@pytest.fixture
async def arq_app(tmp_path: Path, shared_dirs: dict[str, Path], tiny_engine: Any, redis_url: str) -> AsyncIterator[App]:
    settings = arq_settings(tmp_path, shared_dirs, redis_url)
    app = await build_app(settings, engine=tiny_engine)
    async with worker_task(settings, tiny_engine):
        yield app
        await app.close()


def console_for(app: App, tmp_path: Path, user: str = "ann") -> ConsoleFrontEnd:
    return ConsoleFrontEnd(app.conversation, tmp_path / f"out-{user}", user=user, stream=io.StringIO(), live=False)


class WorkerProcess:
    """``persona-studio worker`` in a subprocess (tiny engine on CPU); its log lines are kept."""

    READY_LINE = "Starting worker for"  # arq logs it once the pipeline is loaded and redis reached

    def __init__(self, settings: Settings, cwd: Path, extra_env: dict[str, str] | None = None) -> None:
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "ENGINE_MODEL": "tiny",
            "ENGINE_DEVICE": "cpu",
            "DATABASE_URL": settings.database_url,
            "BLOB_DIR": str(settings.blob_dir),
            "LORA_DIR": str(settings.lora_dir),
            "REDIS_URL": settings.redis_url or "",
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "worker"],
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def worker_id(self) -> str:
        return f"{socket.gethostname()}:{self.process.pid}"

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip())
            if self.READY_LINE in line:
                self._ready.set()
        self._ready.set()  # exited: wake the waiter, which checks

    async def ready(self, limit_s: float = 90.0) -> None:
        ok = await asyncio.to_thread(self._ready.wait, limit_s)
        if not ok or self.process.poll() is not None:
            raise RuntimeError("worker did not start:\n" + "\n".join(self.lines[-30:]))

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class KillScene:
    """A front end on arq, worker A as a subprocess (the one a test kills), a recorder of the bus
    and Ann's console, whose persona Mia is ready."""

    settings: Settings
    app: App
    worker_a: WorkerProcess
    recorder: Recorder
    ann: ConsoleFrontEnd


@contextlib.asynccontextmanager
async def kill_scene(tmp_path: Path, dirs: dict[str, Path], engine: Any, redis_url: str) -> AsyncIterator[KillScene]:
    """Set up a :class:`KillScene`: while A loads, Mia is created on an in-process worker (on
    ``engine``, which also wrote the tiny LoRA library both share) that then stops."""
    settings = arq_settings(tmp_path, dirs, redis_url)
    app = await build_app(settings, engine=None)
    worker_a = WorkerProcess(settings, tmp_path)
    recorder = await Recorder(app.conversation.queue.bus).start()
    ann = console_for(app, tmp_path)
    try:
        async with worker_task(settings, engine):
            await run(ann, "/persona create sweet Mia")
        await worker_a.ready()
        yield KillScene(settings, app, worker_a, recorder, ann)
    finally:
        await recorder.stop()
        worker_a.stop()
        await app.close()
