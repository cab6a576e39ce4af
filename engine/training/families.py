"""What persona training needs to know about an engine family: one small object per family.

Training (engine.training.loop) is family-agnostic: it asks the family for the transformer to adapt,
for the latents of an image and the conditioning of a caption (each computed once per sample),
and for the transformer's velocity prediction on noisy latents. Two families:

- FLUX.1 Kontext (text-to-image mode: no context image, as the first image of a post is made):
  latents packed 2x2 into tokens, T5 + pooled CLIP conditioning, a guidance embedding.
- FLUX.2 [klein]: latents patchified 2x2 and normalised by the VAE's batch-norm statistics (as
  ``Flux2KleinPipeline`` does), stacked Qwen3 hidden states as the caption, 4-axis position ids,
  no guidance embedding. Its renders use the step-distilled model; LoRAs trained on it are
  reported to give grey images, so training may use the klein Base transformer named by the
  ENGINE_TRAIN_MODEL setting (:func:`training_pipeline`): same VAE and text encoder, its own
  transformer, and the LoRA it yields loads into the distilled pipeline for rendering.
"""

from __future__ import annotations

import dataclasses
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from PIL import Image

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from engine.render.engine import Engine
    from engine.render.pipeline import LoadedPipeline

#: each engine's training pipeline (training_pipeline_of): the engine's own, or klein's Base beside it
_TRAINING_PIPELINES: weakref.WeakKeyDictionary[Engine, LoadedPipeline] = weakref.WeakKeyDictionary()

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


def _kontext_encode_image(lp: LoadedPipeline, image: Image.Image, size: int) -> torch.Tensor:
    from engine.render.pipeline import encode_context

    return encode_context(lp, _square(image, size), size, size)


def _kontext_encode_caption(lp: LoadedPipeline, caption: str) -> dict[str, torch.Tensor]:
    from engine.render.pipeline import encode_prompt

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


KONTEXT_TRAINING = TrainFamily(
    name="flux-kontext",
    transformer=lambda lp: lp.pipe.transformer,
    encode_image=_kontext_encode_image,
    encode_caption=_kontext_encode_caption,
    predict=_kontext_predict,
)


#: klein's layers a persona LoRA adapts: the double-stream blocks' attention and feed-forwards,
#: and the single-stream blocks' fused projections (their ``attn.to_out`` is a Linear there; in
#: the double-stream blocks it is a ModuleList, whose Linear is ``attn.to_out.0``)
KLEIN_LORA_TARGETS = (
    "attn.to_k",
    "attn.to_q",
    "attn.to_v",
    "attn.to_out.0",
    "attn.add_k_proj",
    "attn.add_q_proj",
    "attn.add_v_proj",
    "attn.to_add_out",
    "ff.linear_in",
    "ff.linear_out",
    "ff_context.linear_in",
    "ff_context.linear_out",
    "attn.to_qkv_mlp_proj",
    "attn.to_out",
)


def _klein_encode_image(lp: LoadedPipeline, image: Image.Image, size: int) -> torch.Tensor:
    """(1, 4C, h/2, w/2) latents as klein's transformer sees them: the VAE's mode, patchified 2x2,
    normalised with the VAE's batch-norm running statistics (the pipeline's own encoder)."""
    pipe = lp.pipe
    pixels = pipe.image_processor.preprocess(_square(image, size), size, size)
    pixels = pixels.to(device=lp.execution_device, dtype=pipe.vae.dtype)
    return pipe._encode_vae_image(pixels, generator=None)


def _klein_encode_caption(lp: LoadedPipeline, caption: str) -> dict[str, torch.Tensor]:
    from engine.render.pipeline import encode_prompt

    embeds = encode_prompt(lp, caption).prompt_embeds  # stacked Qwen3 hidden states
    text_ids = type(lp.pipe)._prepare_text_ids(embeds).to(embeds.device)
    return {"prompt_embeds": embeds, "text_ids": text_ids}


def _klein_predict(
    lp: LoadedPipeline, noisy: torch.Tensor, sigmas: torch.Tensor, cond: dict[str, torch.Tensor], guidance: float
) -> torch.Tensor:
    pipe = lp.pipe
    transformer = pipe.transformer
    batch, channels, height, width = noisy.shape
    dtype = transformer.dtype
    packed = pipe._pack_latents(noisy.to(dtype))  # (B, h*w, C), row-major like the ids
    img_ids = pipe._prepare_latent_ids(noisy).to(noisy.device)
    guidance_t = None
    if transformer.config.guidance_embeds:
        guidance_t = torch.full((batch,), guidance, device=noisy.device, dtype=torch.float32)
    out = transformer(
        hidden_states=packed,
        timestep=sigmas.to(dtype),  # the pipeline passes t / 1000 = sigma
        guidance=guidance_t,
        encoder_hidden_states=cond["prompt_embeds"].to(dtype).expand(batch, -1, -1),
        txt_ids=cond["text_ids"].expand(batch, -1, -1),
        img_ids=img_ids,
        return_dict=False,
    )[0]
    return out[:, : height * width].permute(0, 2, 1).reshape(batch, channels, height, width)


KLEIN_TRAINING = TrainFamily(
    name="flux2-klein",
    transformer=lambda lp: lp.pipe.transformer,
    encode_image=_klein_encode_image,
    encode_caption=_klein_encode_caption,
    predict=_klein_predict,
    target_modules=KLEIN_LORA_TARGETS,
)


#: the training hooks of each engine family (engine.render.families.RenderFamily.name)
TRAIN_FAMILIES: dict[str, TrainFamily] = {"kontext": KONTEXT_TRAINING, "klein": KLEIN_TRAINING}


def train_family_of(lp: LoadedPipeline) -> TrainFamily:
    """The training hooks of a loaded pipeline's engine family."""
    try:
        return TRAIN_FAMILIES[lp.family.name]
    except KeyError:
        raise ValueError(f"persona training does not support {lp.family.label} yet") from None


def training_pipeline_of(engine: Engine) -> LoadedPipeline:
    """The pipeline persona training uses on ``engine`` (:func:`training_pipeline` of its
    EngineConfig.train_model), loaded once per engine; the engine is held (loaded, locked) meanwhile."""
    with engine.hold():
        lp = _TRAINING_PIPELINES.get(engine)
        if lp is None:
            lp = _TRAINING_PIPELINES[engine] = training_pipeline(engine.pipeline, engine.config.train_model)
        return lp


def training_pipeline(lp: LoadedPipeline, train_model: str | None) -> LoadedPipeline:
    """The pipeline training runs on: ``lp`` itself, or on klein with ``train_model`` set (a klein
    Base pipeline folder or hub id) ``lp``'s VAE and text encoder with the Base model's transformer
    (read from its ``transformer/`` folder, in ``lp``'s dtype and on its device)."""
    if not train_model:
        return lp
    if not lp.family.trains_on_base_model:
        log.warning("ENGINE_TRAIN_MODEL=%s ignored: %s trains on its own model", train_model, lp.family.label)
        return lp
    from diffusers import Flux2KleinPipeline, Flux2Transformer2DModel

    folder = Path(train_model).expanduser()
    if folder.is_dir():
        base = Flux2Transformer2DModel.from_pretrained(folder / "transformer", torch_dtype=lp.dtype)
    else:
        base = Flux2Transformer2DModel.from_pretrained(train_model, subfolder="transformer", torch_dtype=lp.dtype)
    base.to(lp.execution_device).eval()
    components = {**lp.pipe.components, "transformer": base}
    pipe = Flux2KleinPipeline(**components, is_distilled=False)
    pipe.set_progress_bar_config(disable=True)
    log.info("persona training on %s (klein Base transformer)", train_model)
    return dataclasses.replace(lp, pipe=pipe, model=train_model)


def _square(image: Image.Image, size: int) -> Image.Image:
    """Centre crop to a square, resized to ``size``."""
    image = image.convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS)
