"""Which code runs a job: :func:`run_job` sends a training job to engine.training, a clip to
engine.video and every other job to the render engine's ``run`` — the one place that chooses.
The job runner (engine.jobs.runner) calls it in the engine's thread."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from typing import Any, Protocol

from engine.previews import PreviewFrame
from engine.specs import JobKind, JobResult, JobSpec

#: the kinds engine.training runs (on the render engine's pipeline); all others render
TRAINING_KINDS = frozenset({JobKind.TRAIN_PERSONA})


class EngineLike(Protocol):
    """What the runner needs of an engine: engine.render.engine.Engine, or engine.jobs.noop_engine.NoopEngine.

    An engine whose ``run`` also takes ``on_model_free`` calls it when its renders are done (the
    next job may start while it stores its images); for other engines the job's end is that moment.
    """

    def load(self) -> None: ...

    def run(
        self,
        spec: JobSpec,
        on_progress: Callable[[int, int], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> JobResult: ...


def run_job(
    engine: EngineLike,
    spec: JobSpec,
    on_progress: Callable[..., None] | None = None,
    cancel: threading.Event | None = None,
    on_model_free: Callable[[], None] | None = None,
    on_preview: Callable[[PreviewFrame], None] | None = None,
    on_region_masks: Callable[[list[str]], None] | None = None,
) -> JobResult:
    """The one choice between training and rendering: a train_persona job goes to
    engine.training.persona_job with the (render) engine it drives (a test double without the
    Engine's ``hold`` runs it itself, as it runs clips); every other job to ``engine.run``
    (with ``on_model_free``, ``on_preview`` and a region edit's ``on_region_masks``, which records its
    masks before it renders, where the engine takes them)."""
    if spec.kind in TRAINING_KINDS and hasattr(engine, "hold"):  # the Engine (test doubles train themselves)
        from engine.training.persona_job import train_persona  # heavy: imported only where a model runs

        result = train_persona(engine, spec, on_progress, cancel)  # type: ignore[arg-type]
        if on_model_free is not None:
            on_model_free()
        return result
    if spec.kind == JobKind.VIDEO and hasattr(engine, "yield_model"):  # the Engine (test doubles run clips themselves)
        from engine.video.video_job import run_video  # heavy: imported only where a model runs

        return run_video(engine, spec, on_progress, cancel, on_model_free)  # type: ignore[arg-type]
    extra: dict[str, Any] = {}
    if on_model_free is not None and _takes(engine, "on_model_free"):
        extra["on_model_free"] = on_model_free
    if on_preview is not None and _takes(engine, "on_preview"):
        extra["on_preview"] = on_preview
    if spec.region is not None and on_region_masks is not None and _takes(engine, "on_region_masks"):
        extra["on_region_masks"] = on_region_masks
    return engine.run(spec, on_progress=on_progress, cancel=cancel, **extra)


def _takes(engine: Any, argument: str) -> bool:
    """Whether ``engine.run`` takes ``argument`` (engines for tests take only some)."""
    try:
        return argument in inspect.signature(engine.run).parameters
    except (TypeError, ValueError):
        return False
