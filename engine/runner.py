"""The Engine: runs job specs (plain JSON data) on the process's one pipeline.

``Engine.run(spec)`` dispatches on ``spec.kind``:

* create_persona: draw the LoRA mix when the spec has none, render a portrait, store it and its
  face embedding (``None`` when no face shows after ``max_tries`` renders).
* generate: ``count`` images of a post. The first is text-to-image with the persona mix (or a
  Kontext edit of a scene image given as ``context_keys[0]``); the others are Kontext variations
  of the first, so scene and identity carry over.
* edit: the instruction applied to ``context_keys[i]`` for each ``i`` in ``targets``; the result's
  ``image_keys`` is the post's whole image list with the targeted images replaced. For edits,
  ``seeds``, ``identity_scores``, ``identity_notes`` and ``tries`` follow ``targets`` order.
* regenerate: the spec run as ``of_kind`` (its ``seed`` is the new one).

Every wanted image passes the identity gate (engine.identity). Image ``i``'s candidate ``a`` uses
seed :func:`derive_seed` ``(spec.seed, i, a)``: the same spec and seed give the same images.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np
from PIL import Image

from engine.jobs import JobCancelled
from engine.loras import LoraLibrary, write_tiny_library
from engine.specs import JobKind, JobResult, JobSpec, PersonaSpec, RenderParams, default_params
from storage.blobs import BlobStore
from storage.settings import Settings

if TYPE_CHECKING:
    from engine.identity import Embedder, GateResult
    from engine.loras import AdapterManager
    from engine.pipeline import LoadedPipeline, PromptEmbeds

log = logging.getLogger(__name__)

K = TypeVar("K")
V = TypeVar("V")

_ARCHETYPE_LOOKS = {
    "sweet": "a sweet, warm smile and soft friendly eyes",
    "elegant": "an elegant, poised expression and refined features",
    "boss": "a confident, self-assured boss expression and a direct gaze",
    "puppy": "playful puppy-dog eyes and a cheerful, youthful look",
}


class _LRU(Generic[K, V]):
    """A small ordered dict that forgets its least recently used entries beyond ``maxsize``."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = max(1, maxsize)
        self._data: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data


@dataclass
class ThreadCache:
    """What a follow-up job on the same thread can reuse: decoded images by blob key, context
    latents by (blob key, width, height) and prompt embeddings by prompt."""

    images: _LRU[str, Image.Image] = field(default_factory=lambda: _LRU(8))
    latents: _LRU[tuple[str, int, int], Any] = field(default_factory=lambda: _LRU(8))
    prompts: _LRU[tuple[str, Any], PromptEmbeds] = field(default_factory=lambda: _LRU(8))


class _Progress:
    """Turns per-render steps into job-wide ``on_progress(done, total)`` calls."""

    def __init__(self, steps: int, renders: int, callback: Callable[[int, int], None] | None) -> None:
        self.steps = steps
        self.total = steps * renders
        self.done = 0
        self.callback = callback

    def step(self, i: int, _steps: int) -> None:
        if self.callback is not None:
            self.callback(self.done + i, self.total)

    def render_finished(self) -> None:
        self.done += self.steps

    def grow(self) -> None:
        self.total += self.steps


@dataclass
class _Job:
    """State of the job being run: spec, progress, cancel flag and the cache it may use."""

    spec: JobSpec
    params: RenderParams
    progress: _Progress
    cancel: threading.Event | None
    cache: ThreadCache


def derive_seed(base: int, index: int, attempt: int) -> int:
    """Seed of image ``index``, candidate ``attempt``: ``base`` itself for the first candidate of
    the first image, otherwise a 31-bit number drawn from ``(base, index, attempt)``."""
    if index == 0 and attempt == 0:
        return base
    return int(np.random.SeedSequence([base & 0xFFFFFFFF, index, attempt]).generate_state(1)[0] >> 1)


def portrait_prompt(archetype: str) -> str:
    look = _ARCHETYPE_LOOKS.get(archetype, f"a {archetype.replace('_', ' ')} look")
    return (
        f"close-up studio portrait photo of a young adult with {look}, head and shoulders, "
        "facing the camera, soft even lighting, plain light background, sharp focus on the face"
    )


def variation_prompt(prompt: str) -> str:
    return f"{prompt}. Keep the same person, face, outfit and scene; show a different pose and camera angle."


def edit_prompt(instruction: str) -> str:
    return f"{instruction.strip()}. Keep the person's face and identity unchanged."


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
    ) -> None:
        self.model = model
        self.device = device
        self.dtype = dtype
        self.cpu_offload = cpu_offload
        self.library = LoraLibrary(Path(lora_dir))
        self.face_backend = face_backend
        self.face_model_dir = face_model_dir
        self.identity_threshold = identity_threshold
        self.blobs = blobs
        self.adapter_capacity = adapter_capacity
        self.threads: _LRU[int, ThreadCache] = _LRU(thread_cache_size)
        #: counters of real work done: renders, prompt_encodes, context_encodes, image_decodes
        self.stats: Counter[str] = Counter()
        self._lock = threading.RLock()  # held for a whole job: one job at a time per engine
        self._library_lock = threading.Lock()  # short: writing the tiny library once
        self._lp: LoadedPipeline | None = None
        self._embedder: Embedder | None = None
        self._adapters: AdapterManager | None = None
        self._references: _LRU[str, np.ndarray | None] = _LRU(32)

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

    @property
    def adapters(self) -> AdapterManager:
        if self._adapters is None:
            raise RuntimeError("Engine.load() has not run")
        return self._adapters

    @property
    def embedder(self) -> Embedder | None:
        return self._embedder

    def _ensure_library(self) -> None:
        if self.model != "tiny":
            return
        with self._library_lock:
            if self.library.is_empty():
                log.info("writing the tiny LoRA library to %s", self.library.root)
                write_tiny_library(self.library.root)

    def load(self) -> None:
        """Load the pipeline and the face embedder once (later calls do nothing)."""
        with self._lock:
            if self._lp is not None:
                return
            from engine.identity import load_embedder
            from engine.loras import AdapterManager
            from engine.pipeline import load_pipeline

            self._ensure_library()
            embedder = load_embedder(self.face_backend, self.face_model_dir)
            lp = load_pipeline(self.model, device=self.device, dtype=self.dtype, cpu_offload=self.cpu_offload)
            self._adapters = AdapterManager(lp.pipe, self.library, capacity=self.adapter_capacity)
            self._embedder = embedder
            self._lp = lp

    # -- small queries -----------------------------------------------------------------------
    def default_params(self) -> RenderParams:
        """Tiny (test-sized) models: 64x64, 4 steps; real weights: 1024x1024, 28 steps, guidance 2.5."""
        toy = self._lp.toy if self._lp is not None else self.model == "tiny"
        return default_params("tiny" if toy else self.model)

    def archetypes(self) -> list[str]:
        """Archetype folders of the LoRA library (never waits for a running job)."""
        self._ensure_library()
        return self.library.archetypes()

    def draw_mix(self, archetype: str, seed: int, k: int = 3) -> list[tuple[str, float]]:
        """A deterministic LoRA mix for ``archetype``; ValueError naming the known ones if unknown."""
        self._ensure_library()
        return self.library.draw_mix(archetype, seed, k)

    # -- running jobs ------------------------------------------------------------------------
    def run(
        self,
        spec: JobSpec,
        on_progress: Callable[[int, int], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> JobResult:
        """Run one job synchronously (one at a time per engine) and return what it stored."""
        import torch

        from engine.pipeline import RenderCancelled

        started = time.perf_counter()
        with self._lock:
            self.load()
            kind = spec.kind
            if kind == JobKind.REGENERATE:
                if spec.of_kind not in (JobKind.GENERATE, JobKind.EDIT):
                    raise ValueError("a regenerate job needs of_kind 'generate' or 'edit'")
                kind = spec.of_kind
            renders = {JobKind.CREATE_PERSONA: 1, JobKind.GENERATE: spec.count, JobKind.EDIT: len(spec.targets)}
            job = _Job(
                spec=spec,
                params=spec.params,
                progress=_Progress(spec.params.steps, renders[kind], on_progress),
                cancel=cancel,
                cache=self._thread_cache(spec.thread_id),
            )
            if kind == JobKind.CREATE_PERSONA:
                mix = list(spec.persona.lora_mix) or self.library.draw_mix(spec.persona.archetype, spec.persona.seed)
            else:
                mix = list(spec.persona.lora_mix)
            self.adapters.apply(mix)  # outside inference mode: loading creates parameters
            try:
                with torch.inference_mode():
                    if kind == JobKind.CREATE_PERSONA:
                        result = self._create_persona(job)
                    elif kind == JobKind.GENERATE:
                        result = self._generate(job)
                    else:
                        result = self._edit(job)
            except RenderCancelled:
                raise JobCancelled(spec.job_id) from None
        result.lora_mix = [(name, weight) for name, weight in mix]
        result.seconds = round(time.perf_counter() - started, 3)
        return result

    def _thread_cache(self, thread_id: int | None) -> ThreadCache:
        if thread_id is None:
            return ThreadCache()  # still shared by the renders of this one job
        cache = self.threads.get(thread_id)
        if cache is None:
            cache = ThreadCache()
            self.threads.put(thread_id, cache)
        return cache

    # -- job kinds ---------------------------------------------------------------------------
    def _create_persona(self, job: _Job) -> JobResult:
        spec = job.spec
        prompt = spec.prompt or portrait_prompt(spec.persona.archetype)
        width, height = job.params.width, job.params.height
        image, seed, embedding, tries = None, spec.seed, None, 0
        for attempt in range(job.params.max_tries):
            if attempt:
                job.progress.grow()
            seed = derive_seed(spec.seed, 0, attempt)
            image = self._render(job, prompt, seed, width, height)
            tries += 1
            embedding = self._embedder.embed(image) if self._embedder is not None else None
            if embedding is not None:
                break
        assert image is not None
        key = self._store(job, image)
        return JobResult(
            image_keys=[key],
            seeds=[seed],
            identity_scores=[None],
            identity_notes=["ok" if embedding is not None else "no face found"],
            tries=[tries],
            reference_key=key,
            embedding=None if embedding is None else [float(v) for v in embedding],
        )

    def _generate(self, job: _Job) -> JobResult:
        spec = job.spec
        scene = spec.context_keys[0] if spec.context_keys else None
        if scene is not None:
            width, height = self._size_like(job, scene)
        else:
            width, height = job.params.width, job.params.height
        reference = self._reference(spec.persona)
        gate = self._gate(job, reference, spec.prompt, 0, width, height, scene)
        first_key = self._store(job, gate.best.image)
        results = [(first_key, gate)]
        for index in range(1, spec.count):
            gate = self._gate(job, reference, variation_prompt(spec.prompt), index, width, height, first_key)
            results.append((self._store(job, gate.best.image), gate))
        return _result([key for key, _ in results], [g for _, g in results])

    def _edit(self, job: _Job) -> JobResult:
        spec = job.spec
        if not spec.context_keys:
            raise ValueError("an edit needs the post's current images in context_keys")
        if not spec.targets:
            raise ValueError("an edit needs at least one target image")
        bad = [i for i in spec.targets if not 0 <= i < len(spec.context_keys)]
        if bad:
            raise ValueError(f"edit targets {bad} out of range: the post has {len(spec.context_keys)} images")
        reference = self._reference(spec.persona)
        keys = list(spec.context_keys)
        gates = []
        for index in spec.targets:
            width, height = self._size_like(job, keys[index])
            gate = self._gate(job, reference, edit_prompt(spec.prompt), index, width, height, keys[index])
            keys[index] = self._store(job, gate.best.image)
            gates.append(gate)
        return _result(keys, gates)

    # -- helpers -----------------------------------------------------------------------------
    def _gate(
        self,
        job: _Job,
        reference: np.ndarray | None,
        prompt: str,
        index: int,
        width: int,
        height: int,
        context_key: str | None,
    ) -> GateResult:
        from engine.identity import identity_gate

        def candidate(attempt: int) -> tuple[Image.Image, int]:
            if attempt:
                job.progress.grow()
            seed = derive_seed(job.spec.seed, index, attempt)
            return self._render(job, prompt, seed, width, height, context_key), seed

        embedder = self._embedder if reference is not None else None
        return identity_gate(candidate, embedder, reference, self.identity_threshold, job.params.max_tries)

    def _render(
        self, job: _Job, prompt: str, seed: int, width: int, height: int, context_key: str | None = None
    ) -> Image.Image:
        from engine.pipeline import encode_context, encode_prompt, render, snap

        lp = self.pipeline
        width, height = snap(width, lp.multiple_of), snap(height, lp.multiple_of)
        prompt_key = (prompt, self.adapters.active if self.adapters.touches_text_encoders() else None)
        embeds = job.cache.prompts.get(prompt_key)
        if embeds is None:
            embeds = encode_prompt(lp, prompt)
            self.stats["prompt_encodes"] += 1
            job.cache.prompts.put(prompt_key, embeds)
        context = None
        if context_key is not None:
            context = job.cache.latents.get((context_key, width, height))
            if context is None:
                context = encode_context(lp, self._image(job, context_key), width, height)
                self.stats["context_encodes"] += 1
                job.cache.latents.put((context_key, width, height), context)
        cancel = job.cancel.is_set if job.cancel is not None else None
        image = render(
            lp,
            prompt=embeds,
            width=width,
            height=height,
            steps=job.params.steps,
            guidance=job.params.guidance,
            seed=seed,
            context=context,
            on_step=job.progress.step,
            cancel=cancel,
        )
        self.stats["renders"] += 1
        job.progress.render_finished()
        return image

    def _image(self, job: _Job, key: str) -> Image.Image:
        image = job.cache.images.get(key)
        if image is None:
            image = self.blobs.open_image(key).convert("RGB")
            self.stats["image_decodes"] += 1
            job.cache.images.put(key, image)
        return image

    def _store(self, job: _Job, image: Image.Image) -> str:
        key = self.blobs.put_image(image)
        job.cache.images.put(key, image)  # the next edit of this thread starts from it
        return key

    def _size_like(self, job: _Job, key: str) -> tuple[int, int]:
        """Output size with the aspect ratio of image ``key`` and the area of the job's params."""
        from engine.pipeline import fit_size

        info = self.blobs.info(key)
        if info.width and info.height:
            aspect = info.width / info.height
        else:
            image = self._image(job, key)
            aspect = image.width / image.height
        return fit_size(aspect, job.params.width * job.params.height, self.pipeline.multiple_of)

    def _reference(self, persona: PersonaSpec) -> np.ndarray | None:
        """The persona's reference face embedding for this engine's backend, or ``None``.

        A stored embedding of another backend (other size) is recomputed from the reference image.
        """
        embedder = self._embedder
        if embedder is None:
            return None
        if persona.embedding is not None and len(persona.embedding) == embedder.dim:
            return np.asarray(persona.embedding, dtype=np.float32)
        if persona.reference_key is None:
            return None
        if persona.reference_key not in self._references:
            image = self.blobs.open_image(persona.reference_key)
            self._references.put(persona.reference_key, embedder.embed(image))
        return self._references.get(persona.reference_key)


def _result(keys: list[str], gates: list[GateResult]) -> JobResult:
    return JobResult(
        image_keys=keys,
        seeds=[g.best.seed for g in gates],
        identity_scores=[None if g.best.score is None else round(g.best.score, 4) for g in gates],
        identity_notes=[g.best.note for g in gates],
        tries=[g.tries for g in gates],
    )
