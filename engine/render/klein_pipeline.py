"""The FLUX.2 [klein] family: loading a Flux2KleinPipeline and rendering with it.

klein conditions on reference images natively: each is VAE-encoded and its tokens join the image
tokens (each reference at its own time offset in the 4-axis RoPE), so the current image of an
edit, the persona's portrait, products and a scene all go in as one list (at most
:attr:`engine.render.families.KLEIN.max_references`). The prompt is encoded by a Qwen3 model whose hidden
states of three layers are stacked (``text_encoder_out_layers``).

Every reference is brought into the shape klein accepts (:func:`fit_reference`): at least 64 px a
side, at most 8:1, and no larger than the render's own area (the pipeline would only shrink it to
1 MP; reference tokens are paid for at every step).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image, ImageOps

if TYPE_CHECKING:
    from diffusers import Flux2KleinPipeline

log = logging.getLogger(__name__)

#: klein's reference rules (diffusers' Flux2ImageProcessor.check_image_input)
MIN_REFERENCE_SIDE = 64
MAX_REFERENCE_ASPECT = 8.0


def load_klein_pipeline(model: str, torch_dtype: torch.dtype) -> Flux2KleinPipeline:
    """A klein pipeline (hub id or folder) through from_pretrained (the tiny one: RenderFamily.load)."""
    from diffusers import Flux2KleinPipeline

    source = str(Path(model).expanduser()) if Path(model).expanduser().is_dir() else model
    log.info("loading %s (%s, FLUX.2 klein)", source, torch_dtype)
    pipe = Flux2KleinPipeline.from_pretrained(source, dtype=torch_dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def out_layers(pipe: Flux2KleinPipeline) -> tuple[int, ...]:
    from engine.render.tiny_klein import text_encoder_out_layers

    return text_encoder_out_layers(int(pipe.text_encoder.config.num_hidden_layers))


def fit_reference(image: Image.Image, area: int, multiple: int) -> Image.Image:
    """``image`` as klein takes it: RGB, at most ``area`` pixels (never below 64 px a side), padded
    (white) to at most 8:1, sides multiples of ``multiple``."""
    image = image.convert("RGB")
    width, height = image.size
    if max(width / height, height / width) > MAX_REFERENCE_ASPECT:
        long = max(width, height)
        short = int(long / MAX_REFERENCE_ASPECT) + 1
        size = (width, short) if width >= height else (short, height)
        image = ImageOps.pad(image, size, color=(255, 255, 255))
        width, height = image.size
    scale = min(1.0, (area / (width * height)) ** 0.5)
    scale = max(scale, MIN_REFERENCE_SIDE / min(width, height))
    step = max(multiple, MIN_REFERENCE_SIDE // 4)

    def side(value: float) -> int:
        return max(MIN_REFERENCE_SIDE, round(value / step) * step)

    size = (side(width * scale), side(height * scale))
    return image if size == image.size else image.resize(size, Image.Resampling.LANCZOS)


def encode_klein_prompt(
    pipe: Flux2KleinPipeline, prompt: str, device: torch.device, max_sequence_length: int, layers: tuple[int, ...]
) -> torch.Tensor:
    """The stacked Qwen3 hidden states of ``prompt`` (klein's prompt embeddings)."""
    embeds, _text_ids = pipe.encode_prompt(
        prompt=prompt, device=device, max_sequence_length=max_sequence_length, text_encoder_out_layers=layers
    )
    return embeds


def render_klein(
    pipe: Flux2KleinPipeline,
    *,
    prompt_embeds: torch.Tensor,
    max_sequence_length: int,
    layers: tuple[int, ...],
    width: int,
    height: int,
    steps: int,
    guidance: float,
    generators: list[torch.Generator],
    references: Sequence[Image.Image],
    step_end: Callable[..., dict],
    encode_reference: Callable[..., torch.Tensor] | None = None,
) -> torch.Tensor:
    """The VAE latents (:func:`decode_klein` makes images of them) of one klein image per
    generator, ``width`` x ``height``, conditioned on ``references`` (in order).

    ``encode_reference(index, pixels, encode)``, when given, returns reference ``index``'s latents
    in place of the pipeline's own VAE encode (``encode(image=pixels, generator=None)``), e.g. from
    a cache: diffusers' Flux2KleinPipeline takes references only as images and encodes them in
    ``prepare_image_latents``, one ``_encode_vae_image`` call per reference in order; that call is
    routed through ``encode_reference`` for this render."""
    multiple = pipe.vae_scale_factor * 2
    images = [fit_reference(image, max(width * height, MIN_REFERENCE_SIDE**2), multiple) for image in references]
    kwargs: dict[str, Any] = dict(
        image=images or None,
        prompt_embeds=prompt_embeds,
        width=width,
        height=height,
        num_inference_steps=steps,
        guidance_scale=guidance,
        generator=generators if len(generators) > 1 else generators[0],
        num_images_per_prompt=len(generators),
        max_sequence_length=max_sequence_length,
        text_encoder_out_layers=layers,
        callback_on_step_end=step_end,
        output_type="latent",
    )
    if encode_reference is None or not images:
        return pipe(**kwargs).images
    own = pipe._encode_vae_image
    calls = iter(range(len(images)))

    def routed(image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return encode_reference(next(calls), image, own)

    pipe._encode_vae_image = routed  # type: ignore[method-assign]  # this render only (engine lock held)
    try:
        return pipe(**kwargs).images
    finally:
        del pipe._encode_vae_image


def decode_klein(pipe: Flux2KleinPipeline, latents: torch.Tensor) -> list[Image.Image]:
    """Images of :func:`render_klein`'s latents (the pipeline's own decode and post-processing)."""
    pixels = pipe.vae.decode(latents.to(pipe.vae.dtype), return_dict=False)[0]
    return pipe.image_processor.postprocess(pixels, output_type="pil")
