"""What persona training needs to know about an engine family: one small object per family.

Training (engine.training) is family-agnostic: it asks the family for the transformer to adapt,
for the latents of an image and the conditioning of a caption (each computed once per sample),
and for the transformer's velocity prediction on noisy latents. Today there is one family,
FLUX.1 Kontext (text-to-image mode: no context image, as the first image of a post is made);
FLUX.2 [klein] adds its own :class:`TrainFamily` here (and may train on a Base model named by a
setting, see :attr:`TrainFamily.train_model`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

if TYPE_CHECKING:
    from engine.pipeline import LoadedPipeline

#: Layers a persona LoRA adapts (diffusers' FLUX DreamBooth LoRA script's default list); the
#: single-stream blocks' attention shares to_q/k/v, so they are covered as well.
FLUX_LORA_TARGETS = (
    "attn.to_k",
    "attn.to_q",
    "attn.to_v",
    "attn.to_out.0",
    "attn.add_k_proj",
    "attn.add_q_proj",
    "attn.add_v_proj",
    "attn.to_add_out",
    "ff.net.0.proj",
    "ff.net.2",
    "ff_context.net.0.proj",
    "ff_context.net.2",
)


@dataclass
class TrainFamily:
    """One engine family's training hooks (all take the loaded pipeline)."""

    name: str
    #: the module that gets the LoRA
    transformer: Callable[[LoadedPipeline], torch.nn.Module]
    #: VAE latents (1, C, h, w) of an RGB image at ``size`` x ``size``, scaled as the model sees them
    encode_image: Callable[[LoadedPipeline, Image.Image, int], torch.Tensor]
    #: the caption's conditioning tensors (kept on the device, reused every step)
    encode_caption: Callable[[LoadedPipeline, str], dict[str, torch.Tensor]]
    #: the transformer's prediction of ``noise - latents`` for noisy latents at ``sigmas`` (B,)
    predict: Callable[[LoadedPipeline, torch.Tensor, torch.Tensor, dict[str, torch.Tensor], float], torch.Tensor]
    target_modules: tuple[str, ...] = FLUX_LORA_TARGETS
    #: the model to train on when it differs from the one that renders (klein: its Base model)
    train_model: str | None = None


def _kontext_encode_image(lp: LoadedPipeline, image: Image.Image, size: int) -> torch.Tensor:
    from engine.pipeline import encode_context

    return encode_context(lp, _square(image, size), size, size)


def _kontext_encode_caption(lp: LoadedPipeline, caption: str) -> dict[str, torch.Tensor]:
    from engine.pipeline import encode_prompt

    embeds = encode_prompt(lp, caption)
    return {"prompt_embeds": embeds.prompt_embeds, "pooled_prompt_embeds": embeds.pooled_prompt_embeds}


def _kontext_predict(
    lp: LoadedPipeline, noisy: torch.Tensor, sigmas: torch.Tensor, cond: dict[str, torch.Tensor], guidance: float
) -> torch.Tensor:
    from diffusers import FluxKontextPipeline

    pipe = lp.pipe
    transformer = pipe.transformer
    batch, channels, height, width = noisy.shape
    dtype = transformer.dtype
    packed = FluxKontextPipeline._pack_latents(noisy.to(dtype), batch, channels, height, width)
    img_ids = FluxKontextPipeline._prepare_latent_image_ids(batch, height // 2, width // 2, noisy.device, dtype)
    prompt_embeds = cond["prompt_embeds"].to(dtype).expand(batch, -1, -1)
    text_ids = torch.zeros(prompt_embeds.shape[1], 3, device=noisy.device, dtype=dtype)
    guidance_t = None
    if transformer.config.guidance_embeds:
        guidance_t = torch.full((batch,), guidance, device=noisy.device, dtype=torch.float32)
    out = transformer(
        hidden_states=packed,
        timestep=sigmas.to(dtype),  # the pipeline passes t / 1000 = sigma
        guidance=guidance_t,
        pooled_projections=cond["pooled_prompt_embeds"].to(dtype).expand(batch, -1),
        encoder_hidden_states=prompt_embeds,
        txt_ids=text_ids,
        img_ids=img_ids,
        return_dict=False,
    )[0]
    scale = pipe.vae_scale_factor
    return FluxKontextPipeline._unpack_latents(out, height * scale, width * scale, scale)


KONTEXT = TrainFamily(
    name="flux-kontext",
    transformer=lambda lp: lp.pipe.transformer,
    encode_image=_kontext_encode_image,
    encode_caption=_kontext_encode_caption,
    predict=_kontext_predict,
)


def family_of(lp: LoadedPipeline, settings: Any = None) -> TrainFamily:
    """The training family of a loaded pipeline (by its class, as the engine families are picked)."""
    name = type(lp.pipe).__name__
    if name in ("FluxKontextPipeline", "FluxPipeline"):
        return KONTEXT
    raise ValueError(f"persona training does not support {name} yet")


def _square(image: Image.Image, size: int) -> Image.Image:
    """Centre crop to a square, resized to ``size``."""
    image = image.convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS)
