"""A fake engine that renders like a real one in slow motion: generate jobs step through their
steps and show live previews on the way (the real previews: tests/engine/test_previews.py).

Steps go on when the test says (``steps.release(n)``) or, with ``step_s``, by themselves every
``step_s`` seconds; the previews come after the steps of ``previews``, each a solid JPEG of its
colour. Other jobs (a persona's portrait) are made at once.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Mapping

from PIL import Image

from engine.errors import JobCancelled
from engine.previews import PreviewFrame
from engine.specs import JobKind, JobResult, JobSpec
from tests.fakes.engine import FakeEngine

STEPS = 8
#: the preview made after each of these steps, and its colour
PREVIEWS: Mapping[int, tuple[int, int, int]] = {2: (220, 30, 30), 4: (30, 30, 220)}


def jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="JPEG")
    return out.getvalue()


class PreviewingEngine(FakeEngine):
    def __init__(
        self,
        *,
        blobs: object | None = None,
        steps: int = STEPS,
        previews: Mapping[int, tuple[int, int, int]] = PREVIEWS,
        step_s: float | None = None,
    ) -> None:
        super().__init__(blobs=blobs)
        self.total = steps
        self.previews = dict(previews)
        self.auto_step_s = step_s
        #: one release per step (unless ``step_s``)
        self.steps = threading.Semaphore(0)

    def run(
        self,
        spec: JobSpec,
        on_progress: Callable[..., None] | None = None,
        cancel: threading.Event | None = None,
        on_model_free: Callable[[], None] | None = None,
        on_preview: Callable[[PreviewFrame], None] | None = None,
    ) -> JobResult:
        if spec.kind != JobKind.GENERATE:
            return super().run(spec, on_progress, cancel)
        self.specs.append(spec)
        made = 0
        for step in range(1, self.total + 1):
            if self.auto_step_s is not None:
                if cancel is not None and cancel.wait(self.auto_step_s):
                    raise JobCancelled(spec.job_id)
            else:
                while not self.steps.acquire(timeout=0.02):
                    if cancel is not None and cancel.is_set():
                        raise JobCancelled(spec.job_id)
            if on_progress is not None:
                on_progress(step, self.total)
            if step in self.previews and on_preview is not None:
                made += 1
                on_preview(PreviewFrame(spec.job_id, made, step, self.total, jpeg(self.previews[step]), 64, 48))
        if cancel is not None and cancel.is_set():
            raise JobCancelled(spec.job_id)
        return self._paint(spec, None)  # (its own progress would go back to step 1)
