"""Region edits as a job: masks made (and stored) before the render, then each target repainted.

:func:`region_masks`: one mask per target of an edit job, from the spec's words (the detector and
SAM on that image), clicks (SAM) or attached mask image (resized to the image), checked (an empty
one is refused, words found nowhere name the image) and stored as PNG blobs. The worker records
their keys before it renders, so a retried or regenerated job repaints exactly the same region.

:func:`region_edit`: every target repainted inside its mask (engine.render.regions.inpaint) with the
references its family takes: klein the persona's portrait, faces, products and the scene (the
current image is the pipeline's own context); Kontext one reference, the products (several composed
into one). Candidates go through the identity gate like any edit. A mask that covers (almost)
everything makes that target a normal edit (``JobResult.region_full``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from engine.render import references as refs
from engine.render.job_render import JobRender, derive_seed
from engine.render.regions.masks import RegionError, mask_from_image_bytes, mask_png, prepare_region
from engine.specs import TRYON_WORDS, JobSpec, RegionSpec

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from engine.render.identity import GateResult
    from engine.render.pipeline import PromptEmbeds
    from engine.render.regions.masks import Region
    from engine.render.regions.segmentation import Segmenter
    from storage.blobs import BlobStore


def tryon_prompt(instruction: str, names: list[str]) -> str:
    garment = ", ".join(names) if names else "the garment in the reference image"
    extra = f" {instruction.strip()}." if instruction.strip() else ""
    return (
        f"The person now wears {garment} exactly as shown in the reference image (same colour, fabric, cut "
        f"and details), fitted naturally to the body and pose.{extra} Keep the person's face and identity unchanged."
    )


def _mask_for(spec: RegionSpec, image: Image.Image, key: str, number: int, blobs: BlobStore,
              segmenter: Callable[[], Segmenter]) -> np.ndarray:  # fmt: skip
    if spec.mask_key is not None:
        return mask_from_image_bytes(blobs.get(spec.mask_key), image.size)
    if spec.points:
        from engine.render.regions.segmentation import Point

        return segmenter().mask_from_points(image, [Point(x, y, bool(p)) for x, y, p in spec.points], key=key)
    words = spec.words or (TRYON_WORDS if spec.tryon else None)
    if not words:
        raise RegionError("a region edit needs words, clicks or a mask")
    return segmenter().mask_from_words(image, words, key=key, image_number=number)


def region_masks(spec: JobSpec, blobs: BlobStore, segmenter: Callable[[], Segmenter]) -> list[str]:
    """The blob keys of one checked mask per target (``spec.targets`` order), stored as PNGs.
    ``segmenter()`` gives the worker's segmenter (loaded on first need); RegionError for the user."""
    region = spec.region
    if region is None:
        raise ValueError("not a region edit")
    if region.points and len(spec.targets) != 1:
        raise RegionError("clicks belong to one image: edit one image at a time with clicks")
    keys = []
    for target in spec.targets:
        key = spec.context_keys[target]
        image = blobs.open_image(key).convert("RGB")
        mask = _mask_for(region, image, key, target + 1, blobs, segmenter)
        prepare_region(mask, image_number=target + 1)  # refuses an empty mask before anything renders
        keys.append(blobs.put(mask_png(mask)))
    return keys


def region_edit(job: JobRender, edit_text: str) -> tuple[list[str], list[GateResult], list[bool]]:
    """The edit job ``job.spec`` (with ``region.mask_keys`` made by :func:`region_masks`) with the
    prompt ``edit_text`` (a try-on builds its own): the post's image keys after it, the gate of each
    target, and per target whether its mask covered (almost) everything (a normal edit)."""
    from engine.render.pipeline import encode_prompt

    spec = job.spec
    region = spec.region
    assert region is not None
    if len(region.mask_keys) != len(spec.targets):
        raise ValueError("a region edit needs one mask per target (engine.render.regions.job_region.region_masks)")
    refs.check_job(spec, job.pipeline.family, edit=True)
    lp = job.pipeline
    names = [r.name for r in spec.references if r.role == "product" and r.name]
    prompt_text = tryon_prompt(spec.prompt, names) if region.tryon else edit_text
    started = time.perf_counter()
    prompt = encode_prompt(lp, prompt_text)
    job.timings["text_encode"] += time.perf_counter() - started
    reference = job.reference(spec.persona)
    keys = list(spec.context_keys)
    gates: list[GateResult] = []
    full: list[bool] = []
    for index, mask_key in zip(spec.targets, region.mask_keys, strict=True):
        image = job.image(keys[index])
        shape = prepare_region(mask_from_image_bytes(job.blobs.get(mask_key), image.size), image_number=index + 1)
        inputs = refs.edit_inputs(spec, lp.family, keys[index])
        if lp.family.native_references:  # klein: portrait, faces, products, scene
            extra = [job.image(k) for k in inputs.extra]
        else:  # Kontext: one reference, the products (the garment of a try-on)
            extra = [job.image(r.key) for r in spec.references if r.role == "product"]
        if shape.full:  # (almost) everything: a normal edit of this image
            width, height = job.size_like(keys[index])
            gate = job.gate(reference, prompt_text, index, width, height, inputs.main, inputs.extra)
        else:
            gate = _gate(job, prompt, image, shape, extra, index, reference)
        keys[index] = job.store(gate.best.image)
        gates.append(gate)
        full.append(shape.full)
    return keys, gates, full


def _gate(
    job: JobRender,
    prompt: PromptEmbeds,
    image: Image.Image,
    shape: Region,
    extra: list[Image.Image],
    index: int,
    reference: np.ndarray | None,
) -> GateResult:
    """Candidates of target ``index`` repainted inside ``shape`` until one passes the identity gate."""
    from engine.render.identity import identity_gate
    from engine.render.regions.inpaint import render_region

    rendering = 0.0
    spec = job.spec
    assert spec.region is not None
    cancel = job.cancel.is_set if job.cancel is not None else None

    def candidate(attempt: int) -> tuple[Image.Image, int]:
        nonlocal rendering
        seed = derive_seed(spec.seed, index, attempt)
        if attempt:
            job.progress.grow()
        started = time.perf_counter()
        out = render_region(
            job.pipeline, prompt=prompt, image=image, region=shape, steps=job.params.steps,
            guidance=job.params.guidance, seeds=[seed], area=job.params.width * job.params.height,
            references=extra, strength=spec.region.strength, on_step=job.progress.step, cancel=cancel,
        )[0]  # fmt: skip
        rendering += time.perf_counter() - started
        for stage, seconds in out.timings.items():
            job.timings[stage] += seconds
        job.stats["renders"] += 1
        job.stats["region_renders"] += 1
        job.progress.render_finished()
        return out.image, seed

    embedder = job.embedder if reference is not None else None
    started = time.perf_counter()
    result = identity_gate(candidate, embedder, reference, job.identity_threshold, job.params.max_tries)
    job.timings["identity_gate"] += time.perf_counter() - started - rendering
    return result
