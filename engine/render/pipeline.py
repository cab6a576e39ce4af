"""Loading the one pipeline of a process, and rendering with it (both engine families).

``load_pipeline(model)`` asks the model's RenderFamily (engine.render.families) to load it: ``tiny`` /
``tiny-klein`` built offline, anything else a hub id or a local folder through ``from_pretrained``
(bf16 on CUDA, optional model CPU offload). :func:`render` does text-to-image (no context) and edits
(a context image, its cached latents on Kontext, or klein's image list with references) with explicit
output size, a per-step progress callback and a cancel check at every step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers import FluxKontextPipeline
from PIL import Image

from engine.render.families import KONTEXT, RenderFamily, family_of
from engine.specs import is_toy_model, snap

log = logging.getLogger(__name__)


class RenderCancelled(Exception):
    """The cancel check returned true during a render."""


@dataclass
class LoadedPipeline:
    """The process's pipeline and the facts about it that rendering needs."""

    pipe: FluxKontextPipeline  # or the pipeline class of ``family`` (Flux2KleinPipeline)
    model: str
    device: torch.device
    dtype: torch.dtype
    max_sequence_length: int  # T5 tokens per prompt
    multiple_of: int  # output sides are multiples of this (VAE factor x 2x2 packing)
    toy: bool  # test-sized weights: small defaults make sense
    family: RenderFamily = KONTEXT
    text_encoder_out_layers: tuple[int, ...] = ()  # klein: stacked Qwen3 hidden states

    @property
    def execution_device(self) -> torch.device:
        return self.pipe._execution_device


@dataclass
class PromptEmbeds:
    """Encoded prompt: T5 sequence embeddings and the pooled CLIP embedding (klein: Qwen3 states, no pool)."""

    prompt_embeds: torch.Tensor
    pooled_prompt_embeds: torch.Tensor | None


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
    """Load the pipeline once. ``tiny`` / ``tiny-klein`` are built offline; anything else goes
    through from_pretrained, as the family its model_index.json names (engine.render.families.family_of)."""
    target = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, target)
    family = family_of(model)
    pipe = family.load(model, torch_dtype)
    if cpu_offload and target.type == "cuda":
        pipe.enable_model_cpu_offload(device=target)
    else:
        pipe.to(target)
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        if getattr(pipe, name, None) is not None:
            getattr(pipe, name).eval()
    max_sequence_length, out_layers = family.text_encoding(pipe)
    return LoadedPipeline(
        pipe=pipe,
        model=model,
        device=target,
        dtype=torch_dtype,
        max_sequence_length=max_sequence_length,
        multiple_of=pipe.vae_scale_factor * 2,
        toy=is_toy_model(pipe.transformer.config),
        family=family,
        text_encoder_out_layers=out_layers,
    )


def fit_size(aspect: float, area: int, multiple: int) -> tuple[int, int]:
    """``(width, height)`` of about ``area`` pixels with aspect ``width / height``, sides snapped."""
    width = (area * aspect) ** 0.5
    return snap(width, multiple), snap(width / aspect, multiple)


def encode_prompt(lp: LoadedPipeline, prompt: str) -> PromptEmbeds:
    """The family's text encoders on ``prompt`` (the persona LoRAs do not touch them)."""
    return PromptEmbeds(*lp.family.encode_prompt(lp, prompt))


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
    can be the context of the next edit at the same size without a VAE encode); ``timings``:
    seconds of ``denoise`` and ``vae_decode`` (a batch's are shared out evenly among its images)."""

    image: Image.Image
    latents: torch.Tensor | None  # None for klein, whose context is an image
    timings: dict[str, float] = field(default_factory=dict)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def render(lp: LoadedPipeline, **kwargs: Any) -> Image.Image:
    """:func:`render_latents`' image alone (same arguments)."""
    return render_latents(lp, **kwargs).image


def render_latents(lp: LoadedPipeline, *, seed: int, **kwargs: Any) -> Rendered:
    """One image: :func:`render_batch` with one seed."""
    return render_batch(lp, seeds=[seed], **kwargs)[0]


def render_batch(
    lp: LoadedPipeline,
    *,
    prompt: str | PromptEmbeds,
    width: int,
    height: int,
    steps: int,
    guidance: float,
    seeds: Sequence[int],
    context: Image.Image | torch.Tensor | None = None,
    on_step: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    references: Sequence[Image.Image] = (),
    encode_reference: Callable[..., torch.Tensor] | None = None,
    on_latents: Callable[[int, torch.Tensor], None] | None = None,
) -> list[Rendered]:
    """One image per seed, all with the same prompt and context, rendered as one batch: text-to-
    image without ``context``, a Kontext edit with it. Image ``i`` starts from the noise of
    ``seeds[i]`` (its own generator), so it equals the image rendered alone with that seed.

    klein takes ``references`` (images, in order) after the ``context`` image (which must then be
    an image, not latents); Kontext takes none here: engine.render.references composes them into the
    context first. klein's ``encode_reference(index, pixels, encode)`` may stand in for the VAE
    encode of reference ``index`` (engine.render.klein_pipeline.encoding_references: cached latents).

    The output is exactly ``width`` x ``height`` (snapped to the model's multiple); a context image
    is resized to that size, or passed as latents from :func:`encode_context`. ``on_step(i, steps)``
    runs after every denoising step, and ``cancel()`` is checked before the first and after every
    step: true raises :class:`RenderCancelled`. ``on_latents(i, latents)`` sees the latents after
    step ``i`` as the pipeline holds them (packed tokens; engine.render.previews makes previews of them).
    """
    width, height = snap(width, lp.multiple_of), snap(height, lp.multiple_of)
    if not seeds:
        raise ValueError("render_batch needs at least one seed")
    if cancel is not None and cancel():
        raise RenderCancelled
    if isinstance(prompt, str):
        prompt = encode_prompt(lp, prompt)
    if not lp.family.native_references and references:
        raise ValueError(f"{lp.family.label} takes references composed into its context (engine.render.references)")
    if lp.family.context_as_latents and isinstance(context, Image.Image):
        context = encode_context(lp, context, width, height)

    def step_end(pipe: FluxKontextPipeline, i: int, t: torch.Tensor, kwargs: dict) -> dict:
        if on_latents is not None and "latents" in kwargs:
            on_latents(i + 1, kwargs["latents"])
        if on_step is not None:
            on_step(i + 1, steps)
        if cancel is not None and cancel():
            raise RenderCancelled
        return {}

    generators = [torch.Generator(device="cpu").manual_seed(seed) for seed in seeds]
    _sync(lp.device)
    started = time.perf_counter()
    pipe = lp.pipe
    if lp.family.native_references:  # klein: the context and references as one image list
        from engine.render.klein_pipeline import decode_klein, render_klein

        if isinstance(context, torch.Tensor):
            raise ValueError("klein takes the current image as an image, not as latents")
        images = ([context] if context is not None else []) + list(references)
        latents = render_klein(
            pipe,
            prompt_embeds=prompt.prompt_embeds,
            max_sequence_length=lp.max_sequence_length,
            layers=lp.text_encoder_out_layers,
            width=width,
            height=height,
            steps=steps,
            guidance=guidance,
            generators=generators,
            references=images,
            step_end=step_end,
            encode_reference=encode_reference,
        )
        _sync(lp.device)
        denoised = time.perf_counter()
        pils = decode_klein(pipe, latents)
        kept: list[torch.Tensor | None] = [None] * len(pils)  # klein takes images, not latents, as its context
    else:
        result = pipe(
            image=context,
            prompt_embeds=prompt.prompt_embeds,
            pooled_prompt_embeds=prompt.pooled_prompt_embeds,
            width=width,
            height=height,
            max_area=width * height,  # keeps the pipeline from rescaling to 1024²
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=generators,
            num_images_per_prompt=len(seeds),
            max_sequence_length=lp.max_sequence_length,
            callback_on_step_end=step_end,
            _auto_resize=False,
            output_type="latent",
        )
        _sync(lp.device)
        denoised = time.perf_counter()
        latents = pipe._unpack_latents(result.images, height, width, pipe.vae_scale_factor)
        pixels = pipe.vae.decode(latents / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor).sample
        pils = pipe.image_processor.postprocess(pixels, output_type="pil")
        kept = [latents[i : i + 1] for i in range(len(pils))]
    _sync(lp.device)
    decoded = time.perf_counter()
    share = {"denoise": (denoised - started) / len(pils), "vae_decode": (decoded - denoised) / len(pils)}
    return [Rendered(image=image, latents=lat, timings=dict(share)) for image, lat in zip(pils, kept, strict=True)]
