"""Running one job: storage bookkeeping around the engine call, progress on the bus (the JobRunner).

Both queues call :meth:`JobRunner.execute` with the job's JSON spec; engine.jobs.dispatch.run_job chooses
between training, a clip and rendering (the engine's ``run``). The engine runs in a thread
(``asyncio.to_thread``) so the event loop keeps serving heartbeats, progress and cancels. The
result is written to storage (turn images, job done, thread's current turn) in one transaction
before the "done" event goes out (engine.jobs.outcomes.finish_job); a job that had already finished
(cancelled, or completed by an earlier attempt) is not recorded twice.

:meth:`JobRunner.warm` loads the engine in a thread at start-up (the embedded queue starts it), so
the first job does not wait on imports and the event loop never runs model code;
:attr:`JobRunner.readiness` says ``loading`` until that is done.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine import metrics
from engine.errors import JobCancelled
from engine.jobs.dispatch import EngineLike, run_job
from engine.jobs.events import Running
from engine.jobs.failures import classify, is_user_error
from engine.jobs.outcomes import announce_recorded_outcome, finish_job, record_failure, stop_if_finished_elsewhere
from engine.jobs.progress import ProgressBus
from engine.previews import PreviewFrame, PreviewStore
from engine.render.regions.masks import RegionError
from engine.specs import JobKind, JobResult, JobSpec, spread_by_targets
from storage.models import JobStatus
from storage.persona_versions import new_version
from storage.repository import Store

log = logging.getLogger(__name__)

#: at most this often a running job writes its progress to the database (events go out every step)
DB_PROGRESS_INTERVAL_S = 2.0
#: at most this often a running job reads whether storage says it was cancelled (by any process)
CANCEL_CHECK_INTERVAL_S = 0.5


class JobRunner:
    def __init__(
        self, engine: EngineLike, store: Store, bus: ProgressBus, in_engine_thread: Callable[[], object] | None = None
    ) -> None:
        self.engine = engine
        self.store = store
        self.bus = bus
        #: called in the engine's thread before each job (a worker fits torch's threads to its share there)
        self.in_engine_thread = in_engine_thread
        #: "cold" (nothing loaded yet), "loading", "ready" or "failed: <error>"
        self.readiness = "cold"

    def start_warm(self) -> asyncio.Task[None]:
        """Start :meth:`warm` as a task; readiness is ``loading`` from now until it is done."""
        self.readiness = "loading"
        return asyncio.create_task(self.warm(), name="engine-warm-start")

    async def warm(self) -> None:
        """Load the engine in a thread (start-up); a failure is logged and the first job retries."""
        self.readiness = "loading"
        try:
            await asyncio.to_thread(self.engine.load)
        except Exception as exc:
            log.exception("loading the engine failed")
            self.readiness = f"failed: {type(exc).__name__}: {exc}"
            return
        self.readiness = "ready"

    async def execute(
        self,
        spec_json: dict[str, Any],
        cancel: threading.Event | None = None,
        *,
        final_attempt: bool = True,
        on_model_free: Callable[[], None] | None = None,
    ) -> JobResult | None:
        """Run one job. Returns None when it was already finished or got cancelled.

        Exceptions propagate unless ``final_attempt``: the queue retries those; on the final
        attempt the job is marked failed with the error and the user is told.
        """
        spec = JobSpec.model_validate(spec_json)
        cancel = cancel or threading.Event()
        job = await self.store.start_job(spec.job_id)
        if job is None:
            log.info("job %s already finished; skipping", spec.job_id)
            return None
        spec = spec.with_region_masks(((job.spec or {}).get("region") or {}).get("mask_keys") or [])
        waited = metrics.seconds_between(job.created_at, job.started_at)
        if job.attempts == 1 and waited is not None:
            metrics.JOB_WAIT.labels(kind=job.kind).observe(waited)
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        previews: PreviewStore | None = getattr(self.bus, "previews", None)
        if previews is not None:
            await previews.drop(spec.job_id)  # an earlier attempt's preview (a killed worker's) is not this one's
        await self.bus.publish(Running.build(spec.job_id, attempt=job.attempts))
        last_db_write = last_cancel_check = 0.0
        first_step: int | None = None  # a resumed job (training) starts past step 0
        #: the latest progress (step, total, eta) and preview number, for the events that announce previews
        now: dict[str, Any] = {"step": 0, "total": 0, "eta": None, "preview": None}

        def on_progress(step: int, total: int, note: str | None = None) -> None:  # called in the engine's thread
            nonlocal last_db_write, last_cancel_check, first_step
            if first_step is None:
                first_step = step - 1
            elapsed = time.monotonic() - started
            done = step - first_step
            eta = elapsed / done * (total - step) if done > 0 else None
            now.update(step=step, total=total, eta=eta)
            event = Running.build(spec.job_id, step=step, total=total, eta_s=eta, note=note, preview=now["preview"])
            _log_failure(asyncio.run_coroutine_threadsafe(self.bus.publish(event), loop), "progress event")
            if time.monotonic() - last_db_write >= DB_PROGRESS_INTERVAL_S:
                last_db_write = time.monotonic()
                write = self.store.set_progress(spec.job_id, step / total)
                _log_failure(asyncio.run_coroutine_threadsafe(write, loop), "progress write")
            if time.monotonic() - last_cancel_check >= CANCEL_CHECK_INTERVAL_S:
                last_cancel_check = time.monotonic()
                check = stop_if_finished_elsewhere(self.store, spec.job_id, cancel)
                _log_failure(asyncio.run_coroutine_threadsafe(check, loop), "cancel check")

        async def announce(frame: PreviewFrame) -> None:  # stored first: whoever hears of it can read it
            if previews is None:
                return
            await previews.put(frame)
            now["preview"] = frame.seq
            step, total = max(now["step"], frame.step), now["total"] or frame.total
            event = Running.build(spec.job_id, step=step, total=total, eta_s=now["eta"], preview=frame.seq)
            await self.bus.publish(event)

        announcing: list[concurrent.futures.Future[None]] = []

        def on_preview(frame: PreviewFrame) -> None:  # called in the engine's thread
            announcing.append(asyncio.run_coroutine_threadsafe(announce(frame), loop))
            _log_failure(announcing[-1], "preview")

        def on_region_masks(keys: list[str]) -> None:  # engine thread: recorded before anything renders
            asyncio.run_coroutine_threadsafe(self.store.set_region_masks(spec.job_id, keys), loop).result()

        try:  # (a new persona's mix is drawn by the engine from its seed and comes back in the result)
            hooks = _Hooks(on_progress, on_model_free, on_preview if previews is not None else None, on_region_masks)
            try:
                result = await _in_thread(cancel, self._run, spec, hooks, cancel)
            finally:  # every preview is stored before the outcome, which drops a done job's preview
                await asyncio.gather(*(asyncio.wrap_future(f) for f in announcing), return_exceptions=True)
        except asyncio.CancelledError:
            # shutdown or timeout, not a user's cancel (that sets ``cancel``): the engine has
            # stopped; the queue decides (arq runs the job again, the embedded queue re-queues
            # it on its next start, a timeout is recorded by the worker)
            raise
        except Exception as exc:
            if isinstance(exc, JobCancelled) or cancel.is_set():
                if not await self.record_outcome(spec, JobStatus.CANCELLED, error="cancelled"):
                    await announce_recorded_outcome(self.store, self.bus, spec.job_id)  # recorded by another process
                return None
            if is_user_error(exc):  # the user's input, not the program: no traceback, no retry
                failure = classify(exc)
                log.info("job %s refused: %s [error %s]", spec.job_id, exc, failure.error_id)
                await record_failure(self.store, self.bus, spec.job_id, failure, exc)
                return None
            if isinstance(exc, RegionError):  # the user's mask or words: no retry can help
                log.info("job %s refused: %s", spec.job_id, exc)
                await self.record_outcome(spec, JobStatus.FAILED, error=str(exc))
                return None
            if not final_attempt:
                log.warning("job %s failed (will retry): %s", spec.job_id, exc)
                raise
            failure = classify(exc)
            log.error("job %s failed [error %s, %s]", spec.job_id, failure.error_id, failure.kind, exc_info=exc)
            await record_failure(self.store, self.bus, spec.job_id, failure, exc)
            return None
        if not await self._record(spec, result):
            await announce_recorded_outcome(self.store, self.bus, spec.job_id)  # finished elsewhere while it ran
            return None
        return result

    def _run(self, spec: JobSpec, hooks: _Hooks, cancel: threading.Event) -> JobResult:
        if self.in_engine_thread is not None:
            self.in_engine_thread()
        self.engine.load()
        self.readiness = "ready"
        engine = self.engine.loaded_engine() if isinstance(self.engine, _EngineOnLoad) else self.engine
        return run_job(
            engine, spec, hooks.on_progress, cancel, hooks.on_model_free, hooks.on_preview, hooks.on_region_masks
        )

    async def _record(self, spec: JobSpec, result: JobResult) -> bool:
        """Store the result; False when storage already had an outcome (cancelled elsewhere)."""
        result_json = result.model_dump(mode="json")
        if spec.kind == JobKind.TRAIN_PERSONA:
            persona = await self.store.get_persona(spec.persona.persona_id)
            update = new_version(persona.versions, spec.job_id, result.training or {})
            return await finish_job(  # the job and the persona's new version in one transaction
                self.store,
                self.bus,
                spec.job_id,
                JobStatus.DONE,
                result=result_json,
                seconds=result.seconds,
                persona_update=(spec.persona.persona_id, update),
            )
        if spec.kind == JobKind.CREATE_PERSONA:
            mix = [[name, float(weight)] for name, weight in (result.lora_mix or spec.persona.lora_mix)]
            persona = {"reference_key": result.reference_key, "face_embedding": result.embedding, "status": "ready"}
            return await finish_job(  # the job and its persona in one transaction
                self.store,
                self.bus,
                spec.job_id,
                JobStatus.DONE,
                result=result_json,
                seconds=result.seconds,
                persona_update=(spec.persona.persona_id, {**persona, "lora_mix": mix}),
            )
        if spec.kind == JobKind.VIDEO:
            return await self._record_clip(spec, result, result_json)
        scores, notes = await self._by_image(spec, result)
        return await finish_job(
            self.store,
            self.bus,
            spec.job_id,
            JobStatus.DONE,
            result={**result_json, "identity_notes": notes},
            seconds=result.seconds,
            turn_update={"image_keys": result.image_keys, "identity_scores": scores, "seed": spec.seed},
            make_current=True,
        )

    async def _record_clip(self, spec: JobSpec, result: JobResult, result_json: dict[str, Any]) -> bool:
        """A clip's turn keeps the post's images (the next edit starts from them); the clip itself
        is in the turn's ``params["video"]``."""
        turn = await self.store.turn_for_job(spec.job_id)
        parent = await self.store.get_turn(turn.parent_id) if turn and turn.parent_id else None
        update: dict[str, Any] = {"seed": result.seeds[0] if result.seeds else spec.seed}
        if turn is not None:
            update["params"] = {**(turn.params or {}), "video": result.video}
            update["image_keys"] = list(parent.image_keys) if parent else list(spec.context_keys[:1])
            update["identity_scores"] = list(parent.identity_scores) if parent else []
        done = JobStatus.DONE
        return await finish_job(self.store, self.bus, spec.job_id, done, result=result_json, seconds=result.seconds,
                         turn_update=update, make_current=True)  # fmt: skip

    async def _by_image(self, spec: JobSpec, result: JobResult) -> tuple[list[float | None], list[str]]:
        """Identity scores and notes aligned with the post's image list: an edit renders only its
        targets; the other images keep their scores from the parent turn, and note ""."""
        size = len(result.image_keys)
        edit = spec.kind == JobKind.EDIT or (spec.kind == JobKind.REGENERATE and spec.of_kind == JobKind.EDIT)
        if not edit or len(result.identity_scores) != len(spec.targets):  # not in targets order: as is
            return list(result.identity_scores), list(result.identity_notes)
        base: list[float | None] = []
        if not set(range(size)) <= set(spec.targets):  # some images keep their parent's scores
            turn = await self.store.turn_for_job(spec.job_id)
            parent = await self.store.get_turn(turn.parent_id) if turn and turn.parent_id else None
            base = list(parent.identity_scores) if parent else []
        scores = spread_by_targets(result.identity_scores, spec.targets, base, size, None)
        notes = spread_by_targets(result.identity_notes, spec.targets, [], size, "")
        return scores, notes

    async def record_outcome(self, spec: JobSpec, status: JobStatus, error: str) -> bool:
        """Record a failed or cancelled outcome (first outcome only) and publish it; whether it
        was recorded here."""
        return await finish_job(self.store, self.bus, spec.job_id, status, error=error)


async def _in_thread(cancel: threading.Event, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a thread. If this task is cancelled, set ``cancel`` and wait for the thread
    to stop (at the engine's next step) before passing the cancel on: the engine never runs two
    jobs at once, and a job task that returns has really stopped computing."""
    work = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        cancel.set()
        with contextlib.suppress(BaseException):
            await work
        raise


#: modules whose import holds the GIL for long stretches (torch's C init, diffusers, dlib):
#: imported in a thread they stall the event loop by up to ~0.7 s at a time (bench/outside_model.py)
ENGINE_MODULES = (
    "torch",
    "diffusers",
    "engine.render.pipeline",
    "engine.render.identity",
    "engine.render.loras",
    "engine.render.engine",
)


def import_engine_modules(face_backend: str = "dlib") -> None:
    """Import the engine's heavy modules (and dlib's face models) now, blocking: call it before any
    front end connects (nothing waits on the event loop yet); the weights then load in a thread
    (:meth:`JobRunner.warm`)."""
    import importlib

    for name in ENGINE_MODULES:
        importlib.import_module(name)
    if face_backend == "dlib":
        from engine.render.identity import load_embedder

        load_embedder("dlib")


@dataclass
class _Hooks:
    """What a job's engine run reports to: progress, the model being free, live previews."""

    on_progress: Callable[..., None]
    on_model_free: Callable[[], None] | None = None
    on_preview: Callable[[PreviewFrame], None] | None = None
    on_region_masks: Callable[[list[str]], None] | None = None


class _EngineOnLoad:
    """The settings' Engine, imported and built by the first :meth:`load` (in a thread)."""

    def __init__(self, settings: Any, blobs: Any) -> None:
        self._settings = settings
        self._blobs = blobs
        self._engine: Any = None
        self._lock = threading.Lock()

    def load(self) -> None:
        with self._lock:
            if self._engine is None:
                from engine.render.engine import Engine  # heavy: imported only where a model runs

                self._engine = Engine.from_settings(self._settings, self._blobs)
        self._engine.load()

    def loaded_engine(self) -> Any:
        """The Engine, built and loaded."""
        self.load()
        return self._engine

    def run(
        self,
        spec: JobSpec,
        on_progress: Callable[[int, int], None] | None = None,
        cancel: threading.Event | None = None,
        on_model_free: Callable[[], None] | None = None,
        on_preview: Callable[[PreviewFrame], None] | None = None,
        on_region_masks: Callable[[list[str]], None] | None = None,
    ) -> JobResult:
        return run_job(self.loaded_engine(), spec, on_progress, cancel, on_model_free, on_preview, on_region_masks)


def engine_runner_factory(settings: Any, store: Store, blobs: Any) -> Callable[[ProgressBus], JobRunner]:
    """For the embedded queue: a runner whose engine (torch, the pipeline) is imported and loaded
    in a thread, by :meth:`JobRunner.warm` at start-up or by the first job."""

    def make(bus: ProgressBus) -> JobRunner:
        return JobRunner(_EngineOnLoad(settings, blobs), store, bus)

    return make


def _log_failure(future: concurrent.futures.Future[Any], what: str) -> None:
    """Progress is best effort, but its failures are logged, not lost in a dropped future."""

    def done(f: concurrent.futures.Future[Any]) -> None:
        if not f.cancelled() and f.exception() is not None:
            log.warning("%s failed: %s", what, f.exception())

    future.add_done_callback(done)
