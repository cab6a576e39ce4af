"""Masked renders: the family's inpaint pipeline on a crop around the region, stitched back.

The family (engine.render.families: ``RenderFamily.inpaint_pipeline`` / ``inpaint``) makes its
diffusers inpaint pipeline once with ``from_pipe``, sharing the loaded modules (one transformer in
memory, so the persona LoRA slot and any compile apply to it too), and knows how references enter:
klein ``Flux2KleinInpaintPipeline`` takes the persona's portrait, products and scene as
``image_reference`` after the source crop; Kontext ``FluxKontextInpaintPipeline`` takes one reference
(its context tokens; several composed into one) or, without one, the source crop as its context.

:func:`render_region`: the crop around the region (engine.render.regions.crop) is rendered at up to
twice its size, scaled back, pasted into the image and composited over the original with the
region's feathered alpha (engine.render.regions.masks.composite): outside the hard mask the result
is the original pixel for pixel, whatever the VAE round trip did.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from engine.render.pipeline import LoadedPipeline, PromptEmbeds, RenderCancelled, encode_prompt
from engine.render.regions.crop import Crop, crop_around, render_size
from engine.render.regions.masks import Region, composite


def inpaint_pipeline(lp: LoadedPipeline) -> Any:
    """The inpaint pipeline of ``lp``'s family, sharing ``lp.pipe``'s modules (made once)."""
    return lp.family.inpaint_pipeline(lp)


def cover_blocks(mask: np.ndarray, block: int) -> np.ndarray:
    """``mask`` grown to whole ``block`` x ``block`` cells (a cell with any true pixel is all true).

    The pipelines blend the mask in latent space (Kontext: nearest-sampled at 8 px, klein: 16 px
    tokens), where a thin or scattered mask can vanish: the render would then ignore its seed. The
    composite still keeps every pixel outside the region's own hard mask."""
    height, width = mask.shape
    rows, cols = -(-height // block), -(-width // block)
    padded = np.zeros((rows * block, cols * block), dtype=bool)
    padded[:height, :width] = mask
    cells = padded.reshape(rows, block, cols, block).any(axis=(1, 3))
    return np.repeat(np.repeat(cells, block, axis=0), block, axis=1)[:height, :width]


@dataclass
class RegionRendered:
    """One region edit: the whole image (composited), the crop that was rendered and at what size."""

    image: Image.Image
    crop: Crop
    render_size: tuple[int, int]
    timings: dict[str, float] = field(default_factory=dict)


def render_region(
    lp: LoadedPipeline,
    *,
    prompt: str | PromptEmbeds,
    image: Image.Image,
    region: Region,
    steps: int,
    guidance: float,
    seeds: Sequence[int],
    area: int,
    references: Sequence[Image.Image] = (),
    strength: float = 1.0,
    on_step: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> list[RegionRendered]:
    """One region edit of ``image`` per seed (image ``i`` from ``seeds[i]``'s noise, as rendered
    alone): the crop around ``region`` rendered at up to ``area`` pixels with ``references``,
    stitched back and composited. ``on_step(i, n)`` after each of the ``n`` steps run
    (``steps`` x ``strength``); ``cancel()`` true raises RenderCancelled."""
    if image.size != region.size:
        raise ValueError(f"the image is {image.size} but the region is {region.size}")
    if not seeds:
        raise ValueError("render_region needs at least one seed")
    if cancel is not None and cancel():
        raise RenderCancelled
    image = image.convert("RGB")
    crop = crop_around(region.hard)
    size = render_size(crop, area, lp.multiple_of)
    source = image.crop(crop.box).resize(size, Image.Resampling.LANCZOS)
    hard = region.hard[crop.top : crop.bottom, crop.left : crop.right]
    scaled = Image.fromarray(hard.astype(np.uint8) * 255, mode="L").resize(size, Image.Resampling.BILINEAR)
    mask = Image.fromarray(cover_blocks(np.asarray(scaled) > 0, lp.multiple_of).astype(np.uint8) * 255, mode="L")
    if isinstance(prompt, str):
        prompt = encode_prompt(lp, prompt)
    run = max(1, int(steps * strength))

    def step_end(pipe: Any, i: int, t: torch.Tensor, kwargs: dict) -> dict:
        if on_step is not None:
            on_step(i + 1, run)
        if cancel is not None and cancel():
            raise RenderCancelled
        return {}

    started = time.perf_counter()
    outputs = lp.family.inpaint(
        lp, source=source, mask=mask, prompt=(prompt.prompt_embeds, prompt.pooled_prompt_embeds), steps=steps,
        guidance=guidance, strength=strength, seeds=seeds, references=references, step_end=step_end,
    )  # fmt: skip
    rendered = time.perf_counter()
    results = []
    for output in outputs:
        whole = image.copy()
        whole.paste(output.convert("RGB").resize(crop.size, Image.Resampling.LANCZOS), crop.box[:2])
        results.append(RegionRendered(composite(image, whole, region), crop, size))
    share = {"inpaint": (rendered - started) / len(results), "stitch": (time.perf_counter() - rendered) / len(results)}
    for result in results:
        result.timings = dict(share)
    return results
