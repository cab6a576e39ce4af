"""An engine that renders nothing: for measuring the queues (bench/queue.py) and as the base of
the tests' fake engines (tests/fakes/engine.py). It satisfies engine.jobs.dispatch.EngineLike."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from engine.specs import JobResult, JobSpec


class NoopEngine:
    """Returns an empty result at once; remembers how long each ``run`` took (``seconds``)."""

    def __init__(self) -> None:
        #: job id -> seconds spent in ``run``
        self.seconds: dict[str, float] = {}

    def load(self) -> None:
        return None

    def draw_mix(self, archetype: str, seed: int, k: int = 3) -> list[tuple[str, float]]:
        return []

    def run(
        self,
        spec: JobSpec,
        on_progress: Callable[[int, int], None] | None = None,
        cancel: threading.Event | None = None,
        on_model_free: Callable[[], None] | None = None,
    ) -> JobResult:
        started = time.perf_counter()
        result = JobResult()
        self.seconds[spec.job_id] = time.perf_counter() - started
        return result
