"""Masked renders: the family's inpaint pipeline on a crop around the region, stitched back.

The inpaint pipeline is made once per loaded pipeline with ``from_pipe``: it shares the loaded
modules (one transformer in memory, so the persona LoRA slot and any compile apply to it too).

* klein: ``Flux2KleinInpaintPipeline``; ``references`` (the persona's portrait, products, a scene)
  go in as ``image_reference``, after the source crop (which the pipeline itself adds as a context
  reference). They are fitted to one size first (the pipeline crops every reference to the first
  one's size). diffusers gives each sample *one* reference instead of all when their number equals
  the batch size, so such batches render one seed at a time.
* Kontext: ``FluxKontextInpaintPipeline``; with a reference its context tokens are that one image
  (several are composed side by side into one) and the source enters through the mask blend only;
  without one the context is the source crop.

:func:`render_region`: the crop around the region (engine.render.regions.crop) is rendered at up to
twice its size, scaled back, pasted into the image and composited over the original with the
region's feathered alpha (engine.render.regions.masks.composite): outside the hard mask the result
is the original pixel for pixel, whatever the VAE round trip did.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from engine.render.pipeline import LoadedPipeline, PromptEmbeds, RenderCancelled, encode_prompt
from engine.render.regions.crop import Crop, crop_around, render_size
from engine.render.regions.masks import Region, composite

_INPAINT: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_WHITE = (255, 255, 255)


def inpaint_pipeline(lp: LoadedPipeline) -> Any:
    """The inpaint pipeline of ``lp``'s family, sharing ``lp.pipe``'s modules (made once)."""
    pipe = _INPAINT.get(lp.pipe)
    if pipe is None:
        if lp.family == "klein":
            from diffusers import Flux2KleinInpaintPipeline as Inpaint
        else:
            from diffusers import FluxKontextInpaintPipeline as Inpaint  # type: ignore[assignment]
        pipe = Inpaint.from_pipe(lp.pipe)
        pipe.set_progress_bar_config(disable=True)
        _INPAINT[lp.pipe] = pipe
    return pipe


@dataclass
class RegionRendered:
    """One region edit: the whole image (composited), the crop that was rendered and at what size."""

    image: Image.Image
    crop: Crop
    render_size: tuple[int, int]
    timings: dict[str, float] = field(default_factory=dict)


def _fit(image: Image.Image, area: int, multiple: int) -> Image.Image:
    """``image`` in RGB scaled to about ``area`` pixels, sides multiples of ``multiple``."""
    image = image.convert("RGB")
    scale = (area / (image.width * image.height)) ** 0.5
    size = (max(multiple, round(image.width * scale / multiple) * multiple),
            max(multiple, round(image.height * scale / multiple) * multiple))  # fmt: skip
    return image.resize(size, Image.Resampling.LANCZOS)


def klein_references(references: Sequence[Image.Image], area: int, multiple: int) -> list[Image.Image]:
    """klein's reference list: the first fitted to ``area``, the others padded (white) to its size."""
    if not references:
        return []
    from engine.render.klein import fit_reference

    first = fit_reference(references[0], area, multiple)
    return [first] + [ImageOps.pad(ref.convert("RGB"), first.size, color=_WHITE) for ref in references[1:]]


def kontext_reference(references: Sequence[Image.Image], area: int, multiple: int) -> Image.Image | None:
    """Kontext's one reference: the image, or several side by side on one canvas, at about ``area``."""
    if not references:
        return None
    if len(references) == 1:
        return _fit(references[0], area, multiple)
    from engine.render.references import compose_context

    width = max(multiple, round((area * len(references)) ** 0.5 / multiple) * multiple)
    height = max(multiple, round(area / width / multiple) * multiple)
    return compose_context(None, list(references), width, height, multiple)


def _klein(lp: LoadedPipeline, pipe: Any, args: dict[str, Any], refs: list[Image.Image], seeds: Sequence[int]) -> list:
    def call(chunk: Sequence[int]) -> list[Image.Image]:
        gens = [torch.Generator(device="cpu").manual_seed(seed) for seed in chunk]
        return pipe(
            **args,
            image_reference=refs or None,
            generator=gens if len(gens) > 1 else gens[0],
            num_images_per_prompt=len(chunk),
            max_sequence_length=lp.max_sequence_length,
            text_encoder_out_layers=lp.text_encoder_out_layers,
        ).images

    if len(refs) == len(seeds) > 1:  # diffusers would give each sample one reference: one at a time
        return [image for seed in seeds for image in call([seed])]
    return call(seeds)


def _kontext(lp: LoadedPipeline, pipe: Any, args: dict[str, Any], ref: Image.Image | None, seeds: Sequence[int]):
    width, height = args["image"].size
    gens = [torch.Generator(device="cpu").manual_seed(seed) for seed in seeds]
    pooled = args.pop("_pooled")
    return pipe(
        **args,
        image_reference=ref,
        pooled_prompt_embeds=pooled,
        width=width,
        height=height,
        max_area=width * height,
        _auto_resize=False,
        generator=gens,
        num_images_per_prompt=len(seeds),
        max_sequence_length=lp.max_sequence_length,
    ).images


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
    mask = Image.fromarray(hard.astype(np.uint8) * 255, mode="L").resize(size, Image.Resampling.NEAREST)
    if isinstance(prompt, str):
        prompt = encode_prompt(lp, prompt)
    run = max(1, int(steps * strength))

    def step_end(pipe: Any, i: int, t: torch.Tensor, kwargs: dict) -> dict:
        if on_step is not None:
            on_step(i + 1, run)
        if cancel is not None and cancel():
            raise RenderCancelled
        return {}

    pipe = inpaint_pipeline(lp)
    args: dict[str, Any] = dict(
        image=source,
        mask_image=mask,
        prompt_embeds=prompt.prompt_embeds,
        strength=strength,
        num_inference_steps=steps,
        guidance_scale=guidance,
        callback_on_step_end=step_end,
    )
    started = time.perf_counter()
    if lp.family == "klein":
        outputs = _klein(lp, pipe, args, klein_references(references, size[0] * size[1], lp.multiple_of), seeds)
    else:
        args["_pooled"] = prompt.pooled_prompt_embeds
        outputs = _kontext(lp, pipe, args, kontext_reference(references, size[0] * size[1], lp.multiple_of), seeds)
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
