"""Loading the one FLUX.1 Kontext pipeline of a process, and rendering with it.

``load_pipeline("tiny")`` builds the tiny random pipeline (engine.tiny); any other model is a hub
id or a local folder loaded with ``FluxKontextPipeline.from_pretrained`` (bf16 on CUDA, optional
model CPU offload). :func:`render` does text-to-image (no context) and Kontext edits (a context
image or its cached latents) with explicit output size, a per-step progress callback and a
cancel check at every step.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import FluxKontextPipeline
from PIL import Image

from engine.specs import is_toy_model

log = logging.getLogger(__name__)

_REAL_MAX_SEQUENCE_LENGTH = 512


class RenderCancelled(Exception):
    """The cancel check returned true during a render."""


@dataclass
class LoadedPipeline:
    """The process's pipeline and the facts about it that rendering needs."""

    pipe: FluxKontextPipeline
    model: str
    device: torch.device
    dtype: torch.dtype
    max_sequence_length: int  # T5 tokens per prompt
    multiple_of: int  # output sides are multiples of this (VAE factor x 2x2 packing)
    toy: bool  # test-sized weights: small defaults make sense

    @property
    def execution_device(self) -> torch.device:
        return self.pipe._execution_device


@dataclass
class PromptEmbeds:
    """Encoded prompt: T5 sequence embeddings and the pooled CLIP embedding."""

    prompt_embeds: torch.Tensor
    pooled_prompt_embeds: torch.Tensor


def resolve_device(device: str | None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; expected auto, float32, float16 or bfloat16") from None


def load_pipeline(
    model: str = "tiny", *, device: str | None = None, dtype: str = "auto", cpu_offload: bool = False
) -> LoadedPipeline:
    """Load the pipeline once. ``tiny`` is built offline; anything else goes through from_pretrained."""
    target = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, target)
    if model == "tiny":
        from engine.tiny import build_tiny_pipeline

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        pipe = build_tiny_pipeline()
        if torch_dtype != torch.float32:
            pipe.to(dtype=torch_dtype)
    else:
        source = str(Path(model).expanduser()) if Path(model).expanduser().is_dir() else model
        log.info("loading %s (%s) on %s", source, torch_dtype, target)
        pipe = FluxKontextPipeline.from_pretrained(source, dtype=torch_dtype)
        pipe.set_progress_bar_config(disable=True)
    if cpu_offload and target.type == "cuda":
        pipe.enable_model_cpu_offload(device=target)
    else:
        pipe.to(target)
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        getattr(pipe, name).eval()
    max_len = min(_REAL_MAX_SEQUENCE_LENGTH, int(pipe.tokenizer_2.model_max_length))
    return LoadedPipeline(
        pipe=pipe,
        model=model,
        device=target,
        dtype=torch_dtype,
        max_sequence_length=max_len,
        multiple_of=pipe.vae_scale_factor * 2,
        toy=is_toy_model(pipe.transformer.config),
    )


def snap(value: float, multiple: int) -> int:
    """Round ``value`` to the nearest positive multiple of ``multiple``."""
    return max(multiple, round(value / multiple) * multiple)


def fit_size(aspect: float, area: int, multiple: int) -> tuple[int, int]:
    """``(width, height)`` of about ``area`` pixels with aspect ``width / height``, sides snapped."""
    width = (area * aspect) ** 0.5
    return snap(width, multiple), snap(width / aspect, multiple)


def encode_prompt(lp: LoadedPipeline, prompt: str) -> PromptEmbeds:
    """Run the CLIP and T5 encoders on ``prompt`` (the persona LoRAs do not touch them)."""
    embeds, pooled, _ = lp.pipe.encode_prompt(
        prompt=prompt, prompt_2=None, device=lp.execution_device, max_sequence_length=lp.max_sequence_length
    )
    return PromptEmbeds(embeds, pooled)


def encode_context(lp: LoadedPipeline, image: Image.Image, width: int, height: int) -> torch.Tensor:
    """VAE latents of a context image resized to ``width`` x ``height``, as Kontext consumes them."""
    pipe = lp.pipe
    pixels = pipe.image_processor.preprocess(image.convert("RGB"), height, width)
    pixels = pixels.to(device=lp.execution_device, dtype=pipe.vae.dtype)
    latents = pipe.vae.encode(pixels).latent_dist.mode()
    return (latents - pipe.vae.config.shift_factor) * pipe.vae.config.scaling_factor


@dataclass
class Rendered:
    """A rendered image and its final latents, in the form :func:`encode_context` returns (so they
    can be the context of the next edit at the same size without a VAE encode)."""

    image: Image.Image
    latents: torch.Tensor


def render(lp: LoadedPipeline, **kwargs: Any) -> Image.Image:
    """:func:`render_latents`' image alone (same arguments)."""
    return render_latents(lp, **kwargs).image


def render_latents(
    lp: LoadedPipeline,
    *,
    prompt: str | PromptEmbeds,
    width: int,
    height: int,
    steps: int,
    guidance: float,
    seed: int,
    context: Image.Image | torch.Tensor | None = None,
    on_step: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> Rendered:
    """One image: text-to-image without ``context``, a Kontext edit with it.

    The output is exactly ``width`` x ``height`` (snapped to the model's multiple); a context image
    is resized to that size, or passed as latents from :func:`encode_context`. ``on_step(i, steps)``
    runs after every denoising step, and ``cancel()`` is checked before the first and after every
    step: true raises :class:`RenderCancelled`.
    """
    width, height = snap(width, lp.multiple_of), snap(height, lp.multiple_of)
    if cancel is not None and cancel():
        raise RenderCancelled
    if isinstance(prompt, str):
        prompt = encode_prompt(lp, prompt)
    if isinstance(context, Image.Image):
        context = encode_context(lp, context, width, height)

    def step_end(pipe: FluxKontextPipeline, i: int, t: torch.Tensor, kwargs: dict) -> dict:
        if on_step is not None:
            on_step(i + 1, steps)
        if cancel is not None and cancel():
            raise RenderCancelled
        return {}

    generator = torch.Generator(device="cpu").manual_seed(seed)
    result = lp.pipe(
        image=context,
        prompt_embeds=prompt.prompt_embeds,
        pooled_prompt_embeds=prompt.pooled_prompt_embeds,
        width=width,
        height=height,
        max_area=width * height,  # keeps the pipeline from rescaling to 1024²
        num_inference_steps=steps,
        guidance_scale=guidance,
        generator=generator,
        max_sequence_length=lp.max_sequence_length,
        callback_on_step_end=step_end,
        _auto_resize=False,
        output_type="latent",
    )
    pipe = lp.pipe
    latents = pipe._unpack_latents(result.images, height, width, pipe.vae_scale_factor)
    pixels = pipe.vae.decode(latents / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor).sample
    image = pipe.image_processor.postprocess(pixels, output_type="pil")[0]
    return Rendered(image=image, latents=latents)
