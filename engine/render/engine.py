"""The Engine: runs job specs (plain JSON data) on the process's one pipeline.

``Engine.run(spec)`` dispatches on ``spec.kind`` to engine.render.job_kinds (create_persona, generate,
edit; regenerate runs the spec as its ``of_kind`` with the new ``seed``) or, for train_persona,
to engine.training.persona_job. It loads the pipeline,
the face embedder and the persona adapters once (:meth:`Engine.load`), applies the job's LoRA mix
and keeps per-thread caches (engine.render.caches) between jobs.

The engine lock covers the model's work only: once a job's pixels exist the lock is released
(``on_model_free`` is called) and its PNGs are encoded, hashed and written by the storer threads
while the next job may already be rendering. The torch thread count is set at load
(``threads``; from settings: ENGINE_THREADS, default cores / WORKERS_PER_HOST).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cachetools import LRUCache

from engine.errors import JobCancelled
from engine.metrics import observe_stages
from engine.render import job_kinds
from engine.render.caches import ThreadCaches
from engine.render.job_render import JobRender, StepProgress
from engine.render.loras import LoraLibrary, persona_mix, write_tiny_library
from engine.specs import (
    TINY_MODELS,
    JobKind,
    JobResult,
    JobSpec,
    RenderParams,
    default_params,
    family_root,
    model_family,
)
from storage.blobs import DEFAULT_PNG_COMPRESS_LEVEL, BlobStore
from storage.settings import Settings

if TYPE_CHECKING:
    from engine.previews import PreviewFrame
    from engine.render.identity import Embedder
    from engine.render.loras import AdapterManager
    from engine.render.pipeline import LoadedPipeline
    from engine.render.previews import Previewer

log = logging.getLogger(__name__)

_KINDS: dict[JobKind, Callable[[JobRender], JobResult]] = {
    JobKind.CREATE_PERSONA: job_kinds.create_persona,
    JobKind.GENERATE: job_kinds.generate,
    JobKind.EDIT: job_kinds.edit,
}


class Engine:
    """One pipeline, one face embedder and the persona adapters of a worker process."""

    def __init__(
        self,
        *,
        model: str = "tiny",
        device: str | None = None,
        dtype: str = "auto",
        cpu_offload: bool = False,
        lora_dir: Path,
        face_backend: str = "dlib",
        face_model_dir: Path | None = None,
        identity_threshold: float,
        blobs: BlobStore,
        thread_cache_size: int = 16,
        adapter_capacity: int = 8,
        threads: int | None = None,
        png_compress_level: int = DEFAULT_PNG_COMPRESS_LEVEL,
        compile: str = "none",
        attention: str | None = None,
        fuse_qkv: bool = False,
        max_batch: int = 4,
        persona_slot: bool = True,
        persona_rank: int = 0,
        compile_backend: str | Callable[..., Any] = "inductor",
        warm: bool = True,
        train_model: str | None = None,
        previews: bool = True,
        preview_min_interval_s: float = 2.0,
        preview_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.model = model
        #: the model persona training runs on (klein: its Base model); None = ``model``
        self.train_model = train_model or None
        self._train_lp: LoadedPipeline | None = None
        self.device = device
        self.dtype = dtype
        self.cpu_offload = cpu_offload
        self.family = model_family(model)
        self.library = LoraLibrary(family_root(Path(lora_dir), self.family, model))  # a library per family
        self.face_backend = face_backend
        self.face_model_dir = face_model_dir
        self.identity_threshold = identity_threshold
        self.blobs = blobs
        self.adapter_capacity = adapter_capacity
        self.threads = ThreadCaches(thread_cache_size)
        #: counters of real work done: renders, prompt_encodes, context_encodes, image_decodes
        self.stats: Counter[str] = Counter()
        #: seconds spent: ``model`` (renders), ``locked`` (engine lock held by jobs), ``store``
        #: (PNG encode + write, off the lock), ``settle`` (after the lock, waiting for blob keys)
        self.seconds: Counter[str] = Counter()
        self.threads_setting = threads
        self.png_compress_level = png_compress_level
        self._storer = ThreadPoolExecutor(max_workers=2, thread_name_prefix="blob-store")
        self._lock = threading.RLock()  # held for a whole job: one job at a time per engine
        self._library_lock = threading.Lock()  # short: writing the tiny library once
        self._lp: LoadedPipeline | None = None
        self._embedder: Embedder | None = None
        self._adapters: AdapterManager | None = None
        self._references: LRUCache[str, Any] = LRUCache(maxsize=32)
        #: ENGINE_COMPILE / ENGINE_ATTENTION / ENGINE_FUSE_QKV (engine.render.speedups), the persona slot
        #: (engine.render.persona_slot) and ENGINE_MAX_BATCH; ``warm``: render the default size at load
        self.speedups: dict[str, Any] = {
            "compile": compile, "attention": attention, "fuse_qkv": fuse_qkv, "backend": compile_backend
        }  # fmt: skip
        self.max_batch = max_batch
        self.persona_slot = persona_slot
        self.persona_rank = persona_rank
        self.warm = warm
        self.warm_up_s: float | None = None
        #: PREVIEWS and PREVIEW_MIN_INTERVAL_S (engine.render.previews); ``preview_clock``: tests' clock
        self.previews = previews
        self.preview_min_interval_s = preview_min_interval_s
        self.preview_clock = preview_clock

    @classmethod
    def from_settings(cls, settings: Settings, blobs: BlobStore) -> Engine:
        return cls(
            model=settings.engine_model,
            device=settings.engine_device,
            dtype=settings.engine_dtype,
            cpu_offload=settings.engine_cpu_offload,
            lora_dir=settings.lora_dir,
            face_backend=settings.face_backend,
            face_model_dir=settings.face_model_dir,
            identity_threshold=settings.effective_identity_threshold,
            blobs=blobs,
            threads=settings.effective_engine_threads,
            png_compress_level=settings.png_compress_level,
            compile=settings.engine_compile,
            attention=settings.engine_attention,
            fuse_qkv=settings.engine_fuse_qkv,
            max_batch=settings.engine_max_batch,
            persona_slot=settings.engine_persona_slot,
            persona_rank=settings.engine_persona_rank,
            train_model=settings.engine_train_model,
            previews=settings.previews,
            preview_min_interval_s=settings.preview_min_interval_s,
        )

    # -- loading -----------------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self._lp is not None

    @property
    def pipeline(self) -> LoadedPipeline:
        if self._lp is None:
            raise RuntimeError("Engine.load() has not run")
        return self._lp

    def training_pipeline(self) -> LoadedPipeline:
        """The pipeline persona training uses: the engine's, or on klein with ``train_model`` set
        the Base transformer beside the engine's VAE and text encoder (loaded once)."""
        from engine.training.families import training_pipeline

        with self._lock:
            if self._train_lp is None:
                self._train_lp = training_pipeline(self.pipeline, self.train_model)
            return self._train_lp

    @property
    def adapters(self) -> AdapterManager:
        if self._adapters is None:
            raise RuntimeError("Engine.load() has not run")
        return self._adapters

    @property
    def embedder(self) -> Embedder | None:
        return self._embedder

    def _ensure_library(self) -> None:
        if self.model not in TINY_MODELS:
            return
        with self._library_lock:
            if self.library.is_empty():
                log.info("writing the tiny LoRA library to %s", self.library.root)
                write_tiny_library(self.library.root, model=self.model)

    def load(self) -> None:
        """Load the pipeline and the face embedder once (later calls do nothing)."""
        with self._lock:
            if self._lp is not None:
                return
            import torch

            from engine.render.identity import load_embedder
            from engine.render.loras import AdapterManager
            from engine.render.pipeline import load_pipeline
            from engine.render.speedups import apply_speedups, warm_up

            if self.threads_setting is not None:
                torch.set_num_threads(self.threads_setting)

            self._ensure_library()
            embedder = load_embedder(self.face_backend, self.face_model_dir)
            lp = load_pipeline(self.model, device=self.device, dtype=self.dtype, cpu_offload=self.cpu_offload)
            slot = None
            if self.persona_slot:  # before compiling: the slot's first load prepares hot swaps
                from engine.render.persona_slot import PersonaSlot

                files = [self.library.path(n) for a in self.library.archetypes() for n in self.library.names(a)]
                slot = PersonaSlot(lp.pipe, target_rank=self.persona_rank, layout=files)
            self._adapters = AdapterManager(
                lp.pipe, self.library, capacity=self.adapter_capacity, blob_path=self.blobs.path, slot=slot
            )
            self._adapters.apply([])
            apply_speedups(lp, **self.speedups)
            if self.speedups["compile"] != "none" and self.warm:
                params = self._defaults(lp.toy)
                self.warm_up_s = warm_up(lp, params.width, params.height, params.steps, params.guidance)
            self._embedder = embedder
            self._lp = lp

    # -- small queries -----------------------------------------------------------------------
    def default_params(self) -> RenderParams:
        """Tiny (test-sized) models: 64x64, 4 steps; real weights: 1024x1024, 28 steps, guidance 2.5."""
        return self._defaults(self._lp.toy if self._lp is not None else self.model in TINY_MODELS)

    def _defaults(self, toy: bool) -> RenderParams:
        tiny = "tiny-klein" if self.family == "klein" else "tiny"
        return default_params(tiny if toy else self.model)

    def archetypes(self) -> list[str]:
        """Archetype folders of the LoRA library (never waits for a running job)."""
        self._ensure_library()
        return self.library.archetypes()

    def draw_mix(self, archetype: str, seed: int, k: int = 3) -> list[tuple[str, float]]:
        """A deterministic LoRA mix for ``archetype``; ValueError naming the known ones if unknown."""
        self._ensure_library()
        return self.library.draw_mix(archetype, seed, k)

    # -- running jobs ------------------------------------------------------------------------
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
                cache=self.threads.for_thread(spec.thread_id),
                pipeline=self.pipeline,
                adapters=self.adapters,
                embedder=self._embedder,
                blobs=self.blobs,
                identity_threshold=self.identity_threshold,
                stats=self.stats,
                references=self._references,
                storer=self._storer,
                png_compress_level=self.png_compress_level,
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
    ) -> JobResult:
        """Run one job synchronously and return what it stored.

        Jobs take turns on the model (the engine lock); ``on_model_free()`` is called when this
        one's renders are done and the next job may start, before its images are stored.
        ``on_preview(frame)`` gets the renders' live previews (engine.render.previews)."""
        started = time.perf_counter()
        if spec.kind == JobKind.TRAIN_PERSONA:
            from engine.training.persona_job import train_persona

            with self._lock:
                self.load()
                result = train_persona(self, spec, on_progress, cancel)
            if on_model_free is not None:
                on_model_free()
            return result
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
