"""Rendering one job's images: the pipeline call with the job's caches, progress and cancel flag,
the identity gate around it, and the blob store behind it.

Storing is off the engine lock: :meth:`JobRender.store` hands the image to the engine's storer
threads (PNG encode, sha256, write) and returns a provisional key at once; the image and its final
latents are cached under that key, so a variation rendered from it in the same job needs no VAE
encode. :meth:`JobRender.settle`, called by the Engine after it released the lock, waits for the
blob keys, puts them in the result and moves the cache entries under them: the next edit of the
thread then starts from the cached latents of its current image.

:class:`JobRender` is made by the Engine for each job it runs (engine.render.engine) and used by
the job kinds (engine.render.job_kinds). Image ``i``'s candidate ``a`` uses seed :func:`derive_seed`
``(spec.seed, i, a)``: the same spec and seed give the same images.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from cachetools import LRUCache
from PIL import Image

from engine.render.caches import ThreadCache
from engine.render.references import compose_context
from engine.specs import JobResult, JobSpec, PersonaSpec, RenderParams, snap
from storage.blobs import BlobStore, encode_png

if TYPE_CHECKING:
    from engine.render.identity import Embedder, GateResult
    from engine.render.loras import AdapterManager
    from engine.render.pipeline import LoadedPipeline
    from engine.render.previews import Previewer


def derive_seed(base: int, index: int, attempt: int) -> int:
    """Seed of image ``index``, candidate ``attempt``: ``base`` itself for the first candidate of
    the first image, otherwise a 31-bit number drawn from ``(base, index, attempt)``."""
    if index == 0 and attempt == 0:
        return base
    return int(np.random.SeedSequence([base & 0xFFFFFFFF, index, attempt]).generate_state(1)[0] >> 1)


class StepProgress:
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
class JobRender:
    """One job's renders: its spec, progress, cancel flag and cache, and the engine's parts."""

    spec: JobSpec
    params: RenderParams
    progress: StepProgress
    cancel: threading.Event | None
    cache: ThreadCache
    pipeline: LoadedPipeline
    adapters: AdapterManager
    embedder: Embedder | None
    blobs: BlobStore
    identity_threshold: float
    #: the engine's counters of real work: renders, prompt_encodes, context_encodes, image_decodes
    stats: Counter[str]
    #: the engine's reference embeddings by blob key (computed once)
    references: LRUCache[str, Any]
    #: encodes and stores result images beside the model (the engine's storer threads)
    storer: Executor
    png_compress_level: int = 1
    #: the engine's seconds: ``model`` (pipeline and embedder calls), ``store`` (encode + write)
    seconds: Counter[str] = field(default_factory=Counter)
    #: this job's seconds by stage (text_encode, reference_encode, denoise, vae_decode,
    #: identity_gate, png_encode, storage): JobResult.timings
    timings: Counter[str] = field(default_factory=Counter)
    #: images of one post rendered as one batch at most (ENGINE_MAX_BATCH)
    max_batch: int = 1
    #: makes the job's live previews (None: PREVIEWS=off, or nobody listens)
    previewer: Previewer | None = None
    #: provisional key -> future blob key, for the images :meth:`store` was given
    pending: dict[str, Future[str]] = field(default_factory=dict)
    #: id(image) -> (image, latents, width, height) of this job's renders
    _rendered: dict[int, tuple[Image.Image, Any, int, int]] = field(default_factory=dict)
    _timings_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def gate(
        self,
        reference: np.ndarray | None,
        prompt: str,
        index: int,
        width: int,
        height: int,
        context_key: str | None,
        references: Sequence[str] = (),
        first: Image.Image | None = None,
    ) -> GateResult:
        """Image ``index``: candidates until one passes the identity gate (or ``max_tries``);
        ``first``: its first candidate, already rendered (in a batch, :meth:`render_batch`)."""
        from engine.render.identity import identity_gate

        rendering = 0.0

        def candidate(attempt: int) -> tuple[Image.Image, int]:
            nonlocal rendering
            seed = derive_seed(self.spec.seed, index, attempt)
            if attempt == 0 and first is not None:
                return first, seed
            if attempt:
                self.progress.grow()
            started = time.perf_counter()
            image = self.render(prompt, seed, width, height, context_key, references)
            rendering += time.perf_counter() - started
            return image, seed

        embedder = self.embedder if reference is not None else None
        started = time.perf_counter()
        result = identity_gate(candidate, embedder, reference, self.identity_threshold, self.params.max_tries)
        self.timings["identity_gate"] += time.perf_counter() - started - rendering
        return result

    def render(
        self,
        prompt: str,
        seed: int,
        width: int,
        height: int,
        context_key: str | None = None,
        references: Sequence[str] = (),
    ) -> Image.Image:
        """One render; ``references`` (blob keys) join the context as the family takes them
        (engine.render.references)."""
        return self.render_batch(prompt, [seed], width, height, context_key, references)[0]

    def render_batch(
        self,
        prompt: str,
        seeds: Sequence[int],
        width: int,
        height: int,
        context_key: str | None = None,
        references: Sequence[str] = (),
    ) -> list[Image.Image]:
        """One image per seed with the same prompt and context, as one batch (engine.render.pipeline.render_batch)."""
        from engine.render.pipeline import encode_context, encode_prompt, render_batch

        lp = self.pipeline
        started = time.perf_counter()
        width, height = snap(width, lp.multiple_of), snap(height, lp.multiple_of)
        prompt_key = (prompt, self.adapters.active if self.adapters.touches_text_encoders() else None)
        with self.cache.lock:
            embeds = self.cache.prompts.get(prompt_key)
        if embeds is None:
            encoding = time.perf_counter()
            embeds = encode_prompt(lp, prompt)
            self.timings["text_encode"] += time.perf_counter() - encoding
            self.stats["prompt_encodes"] += 1
            with self.cache.lock:
                self.cache.prompts[prompt_key] = embeds
        encoding = time.perf_counter()
        context: Any = None
        keys = ([context_key] if context_key is not None else []) + list(references)
        native = lp.family.native_references  # klein: the context and references as an image list
        images = [self.image(key) for key in references] if native else []
        if native:
            context = self.image(context_key) if context_key is not None else None
        elif references:
            context = kontext_context(self, context_key, list(references), width, height)
        elif context_key is not None:
            with self.cache.lock:
                context = self.cache.latents.get((context_key, width, height))
            if context is None:
                context = encode_context(lp, self.image(context_key), width, height)
                self.stats["context_encodes"] += 1
                with self.cache.lock:
                    self.cache.latents[(context_key, width, height)] = context
        self.timings["reference_encode"] += time.perf_counter() - encoding
        cancel = self.cancel.is_set if self.cancel is not None else None
        batch = len(seeds)
        on_latents = None
        if self.previewer is not None:
            progress = self.progress
            on_latents = self.previewer.for_render(
                width, height, self.params.steps, lambda i: (progress.done + i * batch, progress.total)
            )
        outs = render_batch(
            lp,
            prompt=embeds,
            width=width,
            height=height,
            steps=self.params.steps,
            guidance=self.params.guidance,
            seeds=seeds,
            context=context,
            on_step=lambda i, _n: self.progress.step(i * batch, _n),
            cancel=cancel,
            references=images,
            encode_reference=self._cached_reference(keys) if native else None,
            on_latents=on_latents,
        )
        self.stats["renders"] += batch
        self.stats["batches"] += batch > 1
        self.seconds["model"] += time.perf_counter() - started
        for out in outs:
            for stage, seconds in out.timings.items():
                self.timings[stage] += seconds
            self._rendered[id(out.image)] = (out.image, out.latents, width, height)
            self.progress.render_finished()
        return [out.image for out in outs]

    def _cached_reference(self, keys: list[str]) -> Callable[..., Any]:
        """klein: reference ``index``'s VAE latents from the thread's cache (by blob key and fitted
        size), else encoded by the pipeline and kept; the encode time is reference_encode time."""

        def encode(index: int, pixels: Any, own: Callable[..., Any]) -> Any:
            key = (keys[index], int(pixels.shape[-1]), int(pixels.shape[-2]))
            with self.cache.lock:
                latents = self.cache.latents.get(key)
            if latents is None:
                started = time.perf_counter()
                latents = own(image=pixels, generator=None)
                self.timings["reference_encode"] += time.perf_counter() - started
                self.stats["reference_encodes"] += 1
                with self.cache.lock:
                    self.cache.latents[key] = latents
            return latents

        return encode

    def image(self, key: str) -> Image.Image:
        with self.cache.lock:
            image = self.cache.images.get(key)
        if image is None:
            image = self.blobs.open_image(key).convert("RGB")
            self.stats["image_decodes"] += 1
            with self.cache.lock:
                self.cache.images[key] = image
        return image

    def store(self, image: Image.Image) -> str:
        """Start storing ``image`` beside the model; returns its provisional key (see :meth:`settle`)."""
        provisional = f"pending:{self.spec.job_id}:{len(self.pending)}"
        self.pending[provisional] = self.storer.submit(self._put, image)
        rendered = self._rendered.get(id(image))
        with self.cache.lock:
            self.cache.images[provisional] = image  # the next edit of this thread starts from it
            if rendered is not None and rendered[1] is not None:  # klein renders keep no latents
                _, latents, width, height = rendered
                self.cache.latents[(provisional, width, height)] = latents
        return provisional

    def _put(self, image: Image.Image) -> str:
        started = time.perf_counter()
        data = encode_png(image, self.png_compress_level)
        encoded = time.perf_counter()
        key = self.blobs.put(data)
        stored = time.perf_counter()
        self.seconds["store"] += stored - started
        with self._timings_lock:  # storer threads run beside each other
            self.timings["png_encode"] += encoded - started
            self.timings["storage"] += stored - encoded
        return key

    def settle(self, result: JobResult) -> JobResult:
        """Wait for the stored images' blob keys; put them in ``result`` and the thread's cache."""
        keys = {provisional: future.result() for provisional, future in self.pending.items()}
        for provisional, key in keys.items():
            self.cache.rekey(provisional, key)
        result.image_keys = [keys.get(key, key) for key in result.image_keys]
        result.timings = {stage: round(seconds, 4) for stage, seconds in sorted(self.timings.items())}
        if result.reference_key is not None:
            result.reference_key = keys.get(result.reference_key, result.reference_key)
        self._rendered.clear()
        return result

    def size_like(self, key: str) -> tuple[int, int]:
        """Output size with the aspect ratio of image ``key`` and the area of the job's params."""
        from engine.render.pipeline import fit_size

        info = None if key in self.pending else self.blobs.info(key)
        if info is not None and info.width and info.height:
            aspect = info.width / info.height
        else:
            image = self.image(key)
            aspect = image.width / image.height
        return fit_size(aspect, self.params.width * self.params.height, self.pipeline.multiple_of)

    def reference(self, persona: PersonaSpec) -> np.ndarray | None:
        """The persona's reference face embedding for this engine's backend, or ``None``.

        A stored embedding of another backend (other size) is recomputed from the reference image.
        """
        embedder = self.embedder
        if embedder is None:
            return None
        if persona.embedding is not None and len(persona.embedding) == embedder.dim:
            return np.asarray(persona.embedding, dtype=np.float32)
        if persona.reference_key is None:
            return None
        if persona.reference_key not in self.references:
            image = self.blobs.open_image(persona.reference_key)
            self.references[persona.reference_key] = embedder.embed(image)
        return self.references[persona.reference_key]


def kontext_context(job: JobRender, main: str | None, extra: list[str], width: int, height: int) -> Any:
    """Latents of the composed context of a Kontext render (cached per thread like a plain context)."""
    from engine.render.pipeline import encode_context

    lp = job.pipeline
    key = "+".join([main or "-", *extra])
    with job.cache.lock:  # the storer threads re-key this cache beside the render
        latents = job.cache.latents.get((key, width, height))
    if latents is None:
        main_image = job.image(main) if main is not None else None
        composite = compose_context(main_image, [job.image(k) for k in extra], width, height, lp.multiple_of)
        latents = encode_context(lp, composite, *composite.size)
        job.stats["context_encodes"] += 1
        with job.cache.lock:
            job.cache.latents[(key, width, height)] = latents
    return latents
