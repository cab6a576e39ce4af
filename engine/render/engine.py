"""The Engine: runs job specs (plain JSON data) on the process's one pipeline.

``Engine.run(spec)`` dispatches on ``spec.kind`` to engine.render.job_kinds (create_persona, generate,
edit; regenerate runs the spec as its ``of_kind`` with the new ``seed``); train_persona jobs are sent
to engine.training by the job runner (engine.jobs.runner), which drives this engine through
:meth:`Engine.hold` and :meth:`Engine.job`. It is built from an EngineConfig (engine.config). It loads the pipeline,
the face embedder and the persona adapters once (:meth:`Engine.load`), applies the job's LoRA mix
and keeps per-thread caches (engine.render.caches) between jobs.

The engine lock covers the model's work only: once a job's pixels exist the lock is released
(``on_model_free`` is called) and its PNGs are encoded, hashed and written by the storer threads
while the next job may already be rendering. The torch thread count is set at load
(EngineConfig.threads; from settings: ENGINE_THREADS, default cores / WORKERS_PER_HOST).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from cachetools import LRUCache

from engine.config import EngineConfig
from engine.errors import JobCancelled
from engine.metrics import observe_stages
from engine.render import job_kinds
from engine.render.caches import ThreadCaches
from engine.render.families import RenderFamily, family_of
from engine.render.job_render import JobRender, StepProgress
from engine.render.loras import LoraLibrary, persona_mix, write_tiny_library
from engine.render.model_lock import ModelLock
from engine.specs import TINY_MODELS, JobKind, JobResult, JobSpec, RenderParams
from storage.blobs import BlobStore
from storage.settings import Settings

if TYPE_CHECKING:
    from engine.previews import PreviewFrame
    from engine.render.identity import Embedder
    from engine.render.loras import AdapterManager
    from engine.render.pipeline import LoadedPipeline
    from engine.render.previews import Previewer

log = logging.getLogger(__name__)

#: the kinds this engine runs (regenerate as its ``of_kind``); engine.jobs.runner sends training elsewhere
RENDER_KINDS = (JobKind.CREATE_PERSONA, JobKind.GENERATE, JobKind.EDIT, JobKind.REGENERATE)
_KINDS: dict[JobKind, Callable[[JobRender], JobResult]] = {
    JobKind.CREATE_PERSONA: job_kinds.create_persona,
    JobKind.GENERATE: job_kinds.generate,
    JobKind.EDIT: job_kinds.edit,
}


class Engine:
    """One pipeline, one face embedder and the persona adapters of a worker process."""

    def __init__(self, config: EngineConfig, blobs: BlobStore) -> None:
        self.config = config
        self.blobs = blobs
        self.model = config.model
        self.family: RenderFamily = family_of(config.model)
        self.library = LoraLibrary(self.family.lora_root(config.lora_dir, config.model))  # a library per family
        self.identity_threshold = config.identity_threshold
        self.thread_caches = ThreadCaches(config.thread_cache_size)
        #: counters of real work done: renders, prompt_encodes, context_encodes, image_decodes
        self.stats: Counter[str] = Counter()
        #: seconds spent: ``model`` (renders), ``locked`` (engine lock held by jobs), ``store``
        #: (PNG encode + write, off the lock), ``settle`` (after the lock, waiting for blob keys)
        self.seconds: Counter[str] = Counter()
        #: images of one post rendered as one batch (ENGINE_MAX_BATCH; tests lower it)
        self.max_batch = config.max_batch
        self._storer = ThreadPoolExecutor(max_workers=2, thread_name_prefix="blob-store")
        #: held for a whole job (one job at a time per engine); a clip lets waiting jobs through between steps
        self._lock = ModelLock()
        self._library_lock = threading.Lock()  # short: writing the tiny library once
        self._lp: LoadedPipeline | None = None
        self._embedder: Embedder | None = None
        self._embedder_loaded = False
        self._adapters: AdapterManager | None = None
        self._references: LRUCache[str, Any] = LRUCache(maxsize=32)
        self.warm_up_s: float | None = None
        #: ENGINE_SEG_MODEL: the detector and SAM of region edits (engine.render.regions.segmentation)
        self.seg_model = config.seg_model or ("tiny" if config.model in TINY_MODELS else "")
        self._segmenter: Any = None
        #: PREVIEWS and PREVIEW_MIN_INTERVAL_S (engine.render.previews; tests change them, and the clock)
        self.previews = config.previews
        self.preview_min_interval_s = config.preview_min_interval_s
        self.preview_clock: Callable[[], float] = time.monotonic

    @classmethod
    def from_settings(cls, settings: Settings, blobs: BlobStore) -> Engine:
        return cls(EngineConfig.from_settings(settings), blobs)

    # -- loading -----------------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self._lp is not None or (not self.config.load_images and self._embedder_loaded)

    @property
    def pipeline(self) -> LoadedPipeline:
        if self._lp is None:
            raise RuntimeError("Engine.load() has not run")
        return self._lp

    @property
    def adapters(self) -> AdapterManager:
        if self._adapters is None:
            raise RuntimeError("Engine.load() has not run")
        return self._adapters

    @property
    def embedder(self) -> Embedder | None:
        return self._embedder

    def _ensure_library(self) -> None:
        if self.model != self.family.tiny_model:
            return
        with self._library_lock:
            if self.library.is_empty():
                log.info("writing the tiny LoRA library to %s", self.library.root)
                write_tiny_library(self.library.root, model=self.model)

    def load(self) -> None:
        """Load the pipeline and the face embedder once (later calls do nothing); with
        ``config.load_images`` off (a video-only worker) only the face embedder."""
        with self._lock:
            if self.loaded:
                return
            import torch

            if not self.config.load_images:
                from engine.render.identity import load_embedder

                if self.config.threads is not None:
                    torch.set_num_threads(self.config.threads)
                self._embedder = load_embedder(self.config.face_backend, self.config.face_model_dir)
                self._embedder_loaded = True
                return

            from engine.render.identity import load_embedder
            from engine.render.loras import AdapterManager
            from engine.render.pipeline import load_pipeline
            from engine.render.speedups import apply_speedups, warm_up

            config = self.config
            if config.threads is not None:
                torch.set_num_threads(config.threads)

            self._ensure_library()
            embedder = load_embedder(config.face_backend, config.face_model_dir)
            lp = load_pipeline(config.model, device=config.device, dtype=config.dtype, cpu_offload=config.cpu_offload)
            slot = None
            if config.persona_slot:  # before compiling: the slot's first load prepares hot swaps
                from engine.render.persona_slot import PersonaSlot

                files = [self.library.path(n) for a in self.library.archetypes() for n in self.library.names(a)]
                slot = PersonaSlot(lp.pipe, target_rank=config.persona_rank, layout=files)
            self._adapters = AdapterManager(
                lp.pipe, self.library, capacity=config.adapter_capacity, blob_path=self.blobs.path, slot=slot
            )
            self._adapters.apply([])
            apply_speedups(
                lp,
                compile=config.compile,
                attention=config.attention,
                fuse_qkv=config.fuse_qkv,
                backend=config.compile_backend,
            )
            if config.compile != "none" and config.warm:
                params = self._defaults(lp.toy)
                self.warm_up_s = warm_up(lp, params.width, params.height, params.steps, params.guidance)
            self._embedder = embedder
            self._lp = lp

    def segmenter(self) -> Any:
        """The detector and SAM of region edits (engine.render.regions.segmentation.Segmenter), made
        on first need; their weights load on their first use."""
        with self._library_lock:
            if self._segmenter is None:
                from engine.render.regions.segmentation import Segmenter

                self._segmenter = Segmenter(self.seg_model, device=self.config.device)
            return self._segmenter

    def region_masks(self, spec: JobSpec) -> list[str]:
        """The blob keys of a region edit's masks, one per target, made and stored now
        (engine.render.regions.job_region.region_masks; RegionError for the user)."""
        from engine.render.regions.job_region import region_masks

        with self._lock:
            return region_masks(spec, self.blobs, self.segmenter)

    def yield_model(self) -> bool:
        """Between the steps of a long job (a clip, held through :meth:`hold`): let the jobs waiting
        for the model run first."""
        return self._lock.yield_to_waiters()

    # -- small queries -----------------------------------------------------------------------
    def default_params(self) -> RenderParams:
        """Tiny (test-sized) models: 64x64, 4 steps; real weights: 1024x1024, 28 steps, guidance 2.5."""
        return self._defaults(self._lp.toy if self._lp is not None else self.model == self.family.tiny_model)

    def _defaults(self, toy: bool) -> RenderParams:
        return self.family.default_params(toy)

    def archetypes(self) -> list[str]:
        """Archetype folders of the LoRA library (never waits for a running job)."""
        self._ensure_library()
        return self.library.archetypes()

    def draw_mix(self, archetype: str, seed: int, k: int = 3) -> list[tuple[str, float]]:
        """A deterministic LoRA mix for ``archetype``; ValueError naming the known ones if unknown."""
        self._ensure_library()
        return self.library.draw_mix(archetype, seed, k)

    # -- running jobs ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def hold(self) -> Iterator[Engine]:
        """The engine loaded and held (the engine lock) for a job that drives it itself (training)."""
        with self._lock:
            self.load()
            yield self

    # -- one job ------------------------------------------------------------------------
    @contextlib.contextmanager
    def job(
        self,
        spec: JobSpec,
        renders: int,
        on_progress: Callable[..., None] | None = None,
        cancel: threading.Event | None = None,
        mix: list[tuple[str, float]] | None = None,
        on_preview: Callable[[PreviewFrame], None] | None = None,
    ) -> Iterator[JobRender]:
        """Hold the engine for ``spec``: its LoRA mix (default: the persona's) applied, a
        :class:`JobRender` for ``renders`` renders, inference mode, a cancelled render -> JobCancelled;
        live previews go to ``on_preview`` (unless PREVIEWS=off).

        Images the job stores get provisional keys: call ``job.settle(result)`` (after this
        block, off the lock, or inside it when the keys are needed at once)."""
        import torch

        from engine.render.pipeline import RenderCancelled

        with self._lock:
            self.load()
            locked = time.perf_counter()
            job = JobRender(
                spec=spec,
                params=spec.params,
                progress=StepProgress(spec.params.steps, renders, on_progress),
                cancel=cancel,
                cache=self.thread_caches.for_thread(spec.thread_id),
                pipeline=self.pipeline,
                adapters=self.adapters,
                embedder=self._embedder,
                blobs=self.blobs,
                identity_threshold=self.identity_threshold,
                stats=self.stats,
                references=self._references,
                storer=self._storer,
                png_compress_level=self.config.png_compress_level,
                seconds=self.seconds,
                max_batch=self.max_batch,
                previewer=self._previewer(spec, on_preview),
            )
            self.adapters.apply(persona_mix(spec.persona) if mix is None else mix)  # outside inference mode
            try:
                with torch.inference_mode():
                    yield job
            except RenderCancelled:
                raise JobCancelled(spec.job_id) from None
            finally:
                self.seconds["locked"] += time.perf_counter() - locked

    def _previewer(self, spec: JobSpec, on_preview: Callable[[PreviewFrame], None] | None) -> Previewer | None:
        if not self.previews or on_preview is None:
            return None
        from engine.render.previews import Previewer, PreviewSchedule

        schedule = PreviewSchedule(self.preview_min_interval_s, self.preview_clock)
        return Previewer(spec.job_id, self.pipeline.family, self.pipeline.pipe, on_preview, schedule)

    def run(
        self,
        spec: JobSpec,
        on_progress: Callable[..., None] | None = None,
        cancel: threading.Event | None = None,
        on_model_free: Callable[[], None] | None = None,
        on_preview: Callable[[PreviewFrame], None] | None = None,
        on_region_masks: Callable[[list[str]], None] | None = None,
    ) -> JobResult:
        """Run one job synchronously and return what it stored.

        Jobs take turns on the model (the engine lock); ``on_model_free()`` is called when this
        one's renders are done and the next job may start, before its images are stored.
        ``on_preview(frame)`` gets the renders' live previews (engine.render.previews). A region edit
        without masks gets them first (:meth:`region_masks`), and ``on_region_masks(keys)`` records
        them before anything renders."""
        started = time.perf_counter()
        if spec.kind not in RENDER_KINDS:
            kinds = ", ".join(RENDER_KINDS)
            raise ValueError(f"the render engine runs {kinds} jobs, not {spec.kind} (engine.jobs.runner routes those)")
        if spec.region is not None and not spec.region.mask_keys:
            keys = self.region_masks(spec)
            if on_region_masks is not None:
                on_region_masks(keys)
            spec = spec.with_region_masks(keys)
        with self._lock:
            self.load()
            kind = spec.kind
            if kind == JobKind.REGENERATE:
                if spec.of_kind not in (JobKind.GENERATE, JobKind.EDIT):
                    raise ValueError("a regenerate job needs of_kind 'generate' or 'edit'")
                kind = spec.of_kind
            renders = {JobKind.CREATE_PERSONA: 1, JobKind.GENERATE: spec.count, JobKind.EDIT: len(spec.targets)}
            if kind == JobKind.CREATE_PERSONA:
                mix = list(spec.persona.lora_mix)
                if not mix and spec.persona.photo_key is None:
                    mix = self.library.draw_mix(spec.persona.archetype, spec.persona.seed)
            else:
                mix = persona_mix(spec.persona)  # the trained version in use, else the blend
            with self.job(spec, renders[kind], on_progress, cancel, mix, on_preview) as job:
                result = _KINDS[kind](job)
        if on_model_free is not None:
            on_model_free()
        settling = time.perf_counter()
        result = job.settle(result)
        self.seconds["settle"] += time.perf_counter() - settling
        result.lora_mix = [(name, weight) for name, weight in mix]
        result.seconds = round(time.perf_counter() - started, 3)
        observe_stages(result.timings)
        return result
