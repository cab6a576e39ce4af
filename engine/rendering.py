"""Rendering one job's images: the pipeline call with the job's caches, progress and cancel flag,
the identity gate around it, and the blob store behind it.

:class:`JobRender` is made by the Engine for each job it runs (engine.render_engine) and used by
the job kinds (engine.job_kinds). Image ``i``'s candidate ``a`` uses seed :func:`derive_seed`
``(spec.seed, i, a)``: the same spec and seed give the same images.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from cachetools import LRUCache
from PIL import Image

from engine.render_cache import ThreadCache
from engine.specs import JobSpec, PersonaSpec, RenderParams
from storage.blobs import BlobStore

if TYPE_CHECKING:
    from engine.identity import Embedder, GateResult
    from engine.loras import AdapterManager
    from engine.pipeline import LoadedPipeline


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

    def gate(
        self,
        reference: np.ndarray | None,
        prompt: str,
        index: int,
        width: int,
        height: int,
        context_key: str | None,
        references: Sequence[str] = (),
    ) -> GateResult:
        """Image ``index``: candidates until one passes the identity gate (or ``max_tries``)."""
        from engine.identity import identity_gate

        def candidate(attempt: int) -> tuple[Image.Image, int]:
            if attempt:
                self.progress.grow()
            seed = derive_seed(self.spec.seed, index, attempt)
            return self.render(prompt, seed, width, height, context_key, references), seed

        embedder = self.embedder if reference is not None else None
        return identity_gate(candidate, embedder, reference, self.identity_threshold, self.params.max_tries)

    def render(
        self,
        prompt: str,
        seed: int,
        width: int,
        height: int,
        context_key: str | None = None,
        references: Sequence[str] = (),
    ) -> Image.Image:
        """One render; ``references`` (blob keys) join the context as the family takes them (engine.references)."""
        from engine.pipeline import encode_context, encode_prompt, render, snap
        from engine.references import kontext_context

        lp = self.pipeline
        width, height = snap(width, lp.multiple_of), snap(height, lp.multiple_of)
        prompt_key = (prompt, self.adapters.active if self.adapters.touches_text_encoders() else None)
        embeds = self.cache.prompts.get(prompt_key)
        if embeds is None:
            embeds = encode_prompt(lp, prompt)
            self.stats["prompt_encodes"] += 1
            self.cache.prompts[prompt_key] = embeds
        context: Any = None
        images = [self.image(key) for key in references] if lp.family == "klein" else []
        if lp.family == "klein":
            context = self.image(context_key) if context_key is not None else None
        elif references:
            context = kontext_context(self, context_key, list(references), width, height)
        elif context_key is not None:
            context = self.cache.latents.get((context_key, width, height))
            if context is None:
                context = encode_context(lp, self.image(context_key), width, height)
                self.stats["context_encodes"] += 1
                self.cache.latents[(context_key, width, height)] = context
        cancel = self.cancel.is_set if self.cancel is not None else None
        image = render(
            lp,
            prompt=embeds,
            width=width,
            height=height,
            steps=self.params.steps,
            guidance=self.params.guidance,
            seed=seed,
            context=context,
            on_step=self.progress.step,
            cancel=cancel,
            references=images,
        )
        self.stats["renders"] += 1
        self.progress.render_finished()
        return image

    def image(self, key: str) -> Image.Image:
        image = self.cache.images.get(key)
        if image is None:
            image = self.blobs.open_image(key).convert("RGB")
            self.stats["image_decodes"] += 1
            self.cache.images[key] = image
        return image

    def store(self, image: Image.Image) -> str:
        key = self.blobs.put_image(image)
        self.cache.images[key] = image  # the next edit of this thread starts from it
        return key

    def size_like(self, key: str) -> tuple[int, int]:
        """Output size with the aspect ratio of image ``key`` and the area of the job's params."""
        from engine.pipeline import fit_size

        info = self.blobs.info(key)
        if info.width and info.height:
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
