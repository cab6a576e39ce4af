"""The tests' one fake engine: engine.jobs.dispatch.EngineLike stand-ins built on NoopEngine.

* :class:`FakeEngine` with no ``inner`` engine paints solid-colour PNGs into a blob store (or
  returns empty results without one), reporting progress per step;
* with ``inner`` (the session's real tiny Engine) it runs the real engine;
* either way a test may hold runs back: ``gated=True`` makes every run wait until ``release`` is
  set, "stepping" every ``step_s`` meanwhile (progress out, cancel flag checked), like a long render
  on a busy GPU.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from typing import Any

from PIL import Image

from engine.errors import JobCancelled
from engine.jobs.noop_engine import NoopEngine
from engine.specs import JobKind, JobResult, JobSpec

#: the "steps" a gated run reports while it waits for its release
GATED_TOTAL = 10_000


class FakeEngine(NoopEngine):
    def __init__(
        self,
        inner: Any | None = None,
        *,
        blobs: Any | None = None,
        gated: bool = False,
        step_s: float = 0.02,
    ) -> None:
        super().__init__()
        self.inner = inner
        self.blobs = blobs
        self.step_s = step_s
        #: set it to let held runs go on (set from the start unless ``gated``)
        self.release = threading.Event()
        if not gated:
            self.release.set()
        #: specs of every run, in order
        self.specs: list[JobSpec] = []

    @property
    def runs(self) -> list[str]:
        """Job ids of every run, in order."""
        return [spec.job_id for spec in self.specs]

    def load(self) -> None:
        if self.inner is not None:
            self.inner.load()

    def draw_mix(self, archetype: str, seed: int, k: int = 3) -> list[tuple[str, float]]:
        if self.inner is not None:
            return self.inner.draw_mix(archetype, seed, k)
        return [(f"{archetype}-a", 0.6), (f"{archetype}-b", 0.4)]

    def run(
        self,
        spec: JobSpec,
        on_progress: Callable[[int, int], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> JobResult:
        self.specs.append(spec)
        step = 0
        while not self.release.wait(self.step_s):
            if cancel is not None and cancel.is_set():
                raise JobCancelled(spec.job_id)
            step += 1
            if on_progress is not None:
                on_progress(step, GATED_TOTAL)
        if self.inner is not None:  # the runner's own choice of training, clip or render on the real engine
            from engine.jobs.dispatch import run_job

            return run_job(self.inner, spec, on_progress, cancel)
        if self.blobs is None:
            return super().run(spec, on_progress, cancel)
        return self._paint(spec, on_progress)

    def _paint(self, spec: JobSpec, on_progress: Callable[[int, int], None] | None) -> JobResult:
        """Solid-colour PNGs in the blob store, progress per step."""
        for step in range(1, 5):
            if on_progress is not None:
                on_progress(step, 4)
        count = 1 if spec.kind == JobKind.CREATE_PERSONA else max(1, spec.count)
        keys = []
        for index in range(count):
            buffer = io.BytesIO()
            Image.new("RGB", (32, 32), (40 * index, 120, 200)).save(buffer, format="PNG")
            keys.append(self.blobs.put(buffer.getvalue()))
        if spec.kind == JobKind.CREATE_PERSONA:
            return JobResult(reference_key=keys[0], embedding=[0.0] * 8, lora_mix=spec.persona.lora_mix)
        return JobResult(
            image_keys=keys, seeds=[spec.seed] * count, identity_scores=[0.9] * count, identity_notes=["ok"] * count
        )
