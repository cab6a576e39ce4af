"""The parts of arq that engine/jobs/worker.py relies on beyond its public API, pinned: an arq upgrade
that renames or reshapes one of them fails here, loudly, instead of breaking the worker quietly.

StudioWorker overrides ``Worker._poll_iteration`` (called by ``Worker.main``) and
``Worker._release_sem_dec_counter_on_complete`` (a job task's done callback in
``Worker.start_jobs``), extends ``start_jobs`` (routing filters the due ids) and ``close``,
reads ``Worker.pool`` and resets ``Worker._last_health_check``; the queue client and the worker use arq's key names.
"""

from __future__ import annotations

import inspect

import arq.constants
import pytest
from arq.connections import RedisSettings
from arq.worker import Worker

from engine.jobs import queue, worker, worker_health
from engine.jobs.worker import WorkerState, worker_options
from engine.jobs.worker_health import HEALTH_CHECK_KEY
from storage.settings import load_settings


def _source(name: str) -> str:
    return inspect.getsource(getattr(Worker, name))


def test_arq_is_the_pinned_version() -> None:
    from importlib.metadata import version

    assert version("arq") == "0.28.0", "check every private arq name below against the new version"


@pytest.mark.parametrize(
    ("name", "is_coroutine", "called_from"),
    [
        ("_poll_iteration", True, "main"),
        ("_release_sem_dec_counter_on_complete", False, "start_jobs"),
        ("close", True, None),
    ],
)
def test_overridden_worker_methods_keep_their_shape(name: str, is_coroutine: bool, called_from: str | None) -> None:
    method = getattr(Worker, name)
    assert list(inspect.signature(method).parameters) == ["self"]
    assert inspect.iscoroutinefunction(method) is is_coroutine
    if called_from is not None:
        assert name in _source(called_from), f"arq's Worker.{called_from} no longer calls {name}"


def test_start_jobs_keeps_its_shape() -> None:
    """StudioWorker.start_jobs filters the due job ids (engine.jobs.routing) before arq's own start."""
    method = Worker.start_jobs
    assert list(inspect.signature(method).parameters) == ["self", "job_ids"]
    assert inspect.iscoroutinefunction(method)
    assert "self.start_jobs(job_ids)" in _source("_poll_iteration")
    assert "self.job_counter" in _source("start_jobs") and "self.max_jobs" in _source("start_jobs")


def test_worker_attributes_the_studio_worker_uses() -> None:
    assert isinstance(inspect.getattr_static(Worker, "pool"), property)
    assert "self._last_health_check" in _source("__init__")
    assert "self._last_health_check" in _source("record_health")  # resetting it forces a health write
    assert "abort_jobs_ss" in _source("run_job")  # the abort set StudioWorker reads itself


def test_worker_options_are_arq_worker_arguments(tmp_path) -> None:
    settings = load_settings(
        _env_file=None, database_url=f"sqlite+aiosqlite:///{tmp_path / 'w.db'}", redis_url="redis://127.0.0.1:1/0"
    )
    options = worker_options(WorkerState(settings, engine=object()))
    options.pop("cancel_flags"), options.pop("cores")  # StudioWorker's own arguments
    assert options.pop("worker_id") == worker.WORKER_ID
    inspect.signature(Worker.__init__).bind(None, **options)  # TypeError on an unknown or moved argument
    built = Worker(**{**options, "redis_settings": RedisSettings(port=1)})
    assert built.health_check_key == HEALTH_CHECK_KEY
    assert built.queue_name == queue.ARQ_QUEUE_NAME


def test_key_names_come_from_arq() -> None:
    assert queue.ARQ_QUEUE_NAME == arq.constants.default_queue_name
    assert queue.ARQ_ABORT_KEY == arq.constants.abort_jobs_ss
    assert queue.ARQ_JOB_PREFIX == arq.constants.job_key_prefix
    assert queue.IN_PROGRESS_PREFIX == arq.constants.in_progress_key_prefix
    assert worker_health.HEALTH_CHECK_KEY == arq.constants.default_queue_name + arq.constants.health_check_key_suffix
