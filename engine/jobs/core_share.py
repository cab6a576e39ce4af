"""Workers on one host share its cores without being told.

Each worker counts the live workers of its host through their alive keys (``hostname:pid``, see
engine.jobs.routing) and sets torch's intra-op threads to ``cores // count`` when the count
changes: two ``persona-studio worker`` started side by side use half the cores each instead of
every core each. ``ENGINE_THREADS`` or ``WORKERS_PER_HOST``, when set, stay an override (the
share is then fixed, as before). Threads change only between jobs, never under a running one, and
in the engine's own thread at a job's start (torch's count is per thread).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from engine.jobs import routing
from storage.settings import Settings

log = logging.getLogger(__name__)


def host_of(worker_id: str) -> str:
    return worker_id.rsplit(":", 1)[0]


async def host_workers(redis: Any, worker_id: str) -> int:
    """Live workers of this worker's host, itself included (at least 1)."""
    host = host_of(worker_id)
    alive = {w for w in await routing.live_workers(redis) if host_of(w) == host}
    return max(1, len(alive | {worker_id}))


def overridden(settings: Settings) -> bool:
    """ENGINE_THREADS or WORKERS_PER_HOST was set: the operator's share wins."""
    return bool({"engine_threads", "workers_per_host"} & settings.model_fields_set)


class CoreShare:
    """This worker's share of the host's cores: :meth:`observe` the host's worker count (alive
    beat), :meth:`apply` it between jobs."""

    def __init__(self, settings: Settings, worker_id: str, cores: int | None = None) -> None:
        self.worker_id = worker_id
        self.enabled = not overridden(settings)
        self.cores = cores or os.cpu_count() or 1
        self.count = 1
        self.threads: int | None = None  # the share last logged (each thread is set to it)

    def observe(self, count: int) -> None:
        self.count = max(1, count)

    @property
    def wanted(self) -> int:
        return max(1, self.cores // self.count)

    def apply(self) -> int | None:
        """Set torch's threads to this worker's share in the calling thread; the threads set, or None.

        Call it in the thread that runs the engine (:class:`engine.jobs.runner.JobRunner` does, at a
        job's start): with OpenMP torch keeps the count per thread, and a thread that has run torch
        keeps its count when another thread sets a new one, so a set from the event loop alone left
        the engine's thread on the count it had at load (a pair computed with every core each).
        """
        if not self.enabled:
            return None
        import torch

        wanted = self.wanted
        if self.threads != wanted:
            log.info(
                "core share: %d worker(s) on this host, %d cores: torch threads = %d", self.count, self.cores, wanted
            )
            self.threads = wanted
        if torch.get_num_threads() == wanted:  # this thread's own count
            return None
        torch.set_num_threads(wanted)
        return wanted
