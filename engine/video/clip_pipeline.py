"""Loading the video pipeline (Wan image-to-video) and rendering one clip's frames with it.

``ENGINE_VIDEO_MODEL=tiny`` builds the tiny offline pipeline (engine.video.tiny_wan); anything else is a
hub id or a local folder loaded as ``WanImageToVideoPipeline`` (Wan2.2-TI2V-5B-Diffusers and alike: its
``expand_timesteps`` makes the source image the first latent frame). The VAE stays in float32, as Wan
recommends; the rest runs in bf16 on CUDA. ``cpu_offload`` moves each component to the GPU only while
it runs (diffusers' model offload), so a clip can share a GPU with the image pipeline.

:func:`render_frames` asks Wan for the smallest 4k+1 frames that cover the clip and trims the 0-3
extra frames at the end, so the clip has exactly ``seconds x fps`` frames (the first is the source).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from engine.render.pipeline import RenderCancelled, fit_size, resolve_device, resolve_dtype
from engine.specs import TINY_VIDEO_MODEL, VideoParams, is_toy_model

log = logging.getLogger(__name__)

_REAL_MAX_SEQUENCE_LENGTH = 512
#: what the clip should not look like (with guidance > 1 it is the unconditional branch)
NEGATIVE_PROMPT = (
    "static picture, frozen, blurred details, worst quality, low quality, jpeg artifacts, deformed face, "
    "changing face, extra fingers, poorly drawn hands, text, subtitles, watermark"
)


@dataclass
class LoadedVideoPipeline:
    """The process's video pipeline and the facts about it that rendering needs."""

    pipe: object  # diffusers.WanImageToVideoPipeline
    model: str
    device: torch.device
    dtype: torch.dtype
    max_sequence_length: int
    multiple_of: int  # output sides are multiples of this (VAE factor x transformer patch)
    toy: bool


@dataclass
class RenderedFrames:
    """One render: the clip's frames (uint8, T x H x W x 3) and where the time went."""

    frames: np.ndarray
    seed: int
    generated: int  # frames Wan made (4k+1) before trimming
    timings: dict[str, float] = field(default_factory=dict)


def load_video_pipeline(
    model: str = "tiny", *, device: str | None = None, dtype: str = "auto", cpu_offload: bool = False
) -> LoadedVideoPipeline:
    """Load the video pipeline once: ``tiny`` offline, anything else with from_pretrained."""
    from diffusers import AutoencoderKLWan, WanImageToVideoPipeline

    target = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, target)
    if model == TINY_VIDEO_MODEL:
        from engine.video.tiny_wan import build_tiny_video_pipeline

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        pipe = build_tiny_video_pipeline()
        if torch_dtype != torch.float32:  # the VAE stays in float32
            for name in ("transformer", "text_encoder"):
                getattr(pipe, name).to(dtype=torch_dtype)
    else:
        source = str(Path(model).expanduser()) if Path(model).expanduser().is_dir() else model
        log.info("loading the video model %s (%s) on %s", source, torch_dtype, target)
        vae = AutoencoderKLWan.from_pretrained(source, subfolder="vae", dtype=torch.float32)
        pipe = WanImageToVideoPipeline.from_pretrained(source, vae=vae, dtype=torch_dtype)
        pipe.set_progress_bar_config(disable=True)
    if cpu_offload and target.type == "cuda":
        pipe.enable_model_cpu_offload(device=target)
    else:
        pipe.to(target)
    patch = pipe.transformer.config.patch_size
    max_len = min(_REAL_MAX_SEQUENCE_LENGTH, int(pipe.tokenizer.model_max_length))
    return LoadedVideoPipeline(
        pipe=pipe,
        model=model,
        device=target,
        dtype=torch_dtype,
        max_sequence_length=max_len,
        multiple_of=int(pipe.vae_scale_factor_spatial * patch[1]),
        toy=is_toy_model(pipe.transformer.config),
    )


def clip_size(lvp: LoadedVideoPipeline, image: Image.Image, params: VideoParams) -> tuple[int, int]:
    """``(width, height)``: the source's aspect ratio at the params' area, sides snapped for Wan."""
    return fit_size(image.width / image.height, params.width * params.height, lvp.multiple_of)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def render_frames(
    lvp: LoadedVideoPipeline,
    image: Image.Image,
    prompt: str,
    params: VideoParams,
    seed: int,
    *,
    on_step: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    between_steps: Callable[[], None] | None = None,
) -> RenderedFrames:
    """The clip's frames animating ``image`` (the first frame) as ``prompt`` says.

    ``on_step(i, steps)`` runs after every denoising step; ``cancel()`` is checked before the first
    and after every step (true raises RenderCancelled at once, before the VAE decode);
    ``between_steps()`` runs after every step too: a long clip lets other jobs use the model there.
    """
    if cancel is not None and cancel():
        raise RenderCancelled
    width, height = clip_size(lvp, image, params)
    wanted, generated = params.frames, params.generated_frames
    source = image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
    steps = params.steps
    timings: dict[str, float] = {}
    marks = {"last": 0.0}

    def step_end(pipe: object, i: int, t: torch.Tensor, kwargs: dict) -> dict:
        if i == 0:
            _sync(lvp.device)
        if on_step is not None:
            on_step(i + 1, steps)
        if cancel is not None and cancel():
            raise RenderCancelled
        if between_steps is not None:
            paused = time.perf_counter()
            between_steps()
            marks["last"] += time.perf_counter() - paused  # time lent to other jobs is not this clip's
        return {}

    generator = torch.Generator(device="cpu").manual_seed(seed)
    started = time.perf_counter()
    out = lvp.pipe(  # type: ignore[operator]
        image=source,
        prompt=prompt,
        negative_prompt=NEGATIVE_PROMPT if params.guidance > 1.0 else None,
        height=height,
        width=width,
        num_frames=generated,
        num_inference_steps=steps,
        guidance_scale=params.guidance,
        generator=generator,
        max_sequence_length=lvp.max_sequence_length,
        callback_on_step_end=step_end,
        output_type="np",
    )
    _sync(lvp.device)
    timings["video_render"] = time.perf_counter() - started - marks["last"]
    frames = np.asarray(out.frames[0])  # (T, H, W, 3) floats in 0-1
    frames = (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)[:wanted]
    if len(frames) < wanted:  # never for Wan's 4k+1 >= wanted; a model that made fewer repeats its last
        frames = np.concatenate([frames, np.repeat(frames[-1:], wanted - len(frames), axis=0)])
    return RenderedFrames(frames=frames, seed=seed, generated=generated, timings=timings)
