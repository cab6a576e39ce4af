"""Making live previews of a render from its latents, between denoising steps.

No VAE decode: a linear projection of the latent channels to RGB (:class:`LatentRGB`, one per
family), computed from the step's latents in the pipeline's ``callback_on_step_end``
(engine.render.pipeline.render_batch's ``on_latents``), upscaled to about 512 px and JPEG-encoded.

* FLUX.1 Kontext: the callback's latents are packed 2x2 tokens ``(B, h/16 * w/16, 64)``; unpacked by
  the pipeline's own ``_unpack_latents`` into 16 channels at 1/8 of the image size.
* FLUX.2 klein: the callback's latents are patchified ``(B, h/16 * w/16, 128)`` tokens in row-major
  order, normalised with the VAE's batch-norm statistics; unpatchified by the pipeline's own
  ``_unpatchify_latents`` into 32 channels at 1/8 of the image size. The FLUX.2 factors below were
  fitted in that normalised space (ComfyUI's FLUX.2 VAE applies the batch norm inside its own
  encoder/decoder, ``batch_norm_latent`` in comfy/sd.py, and its sampler previews what the model
  sees), so the batch norm is not undone here.

The projection is applied to the flow-matching estimate of the clean image, not to the noisy
latents themselves: with the Euler scheduler the step's velocity is ``(x_next - x_prev) / (σ_next - σ)``
and the clean estimate ``x_prev - σ · velocity``; at 25 % of the steps the noisy latents are still
mostly noise, the estimate already shows the composition. It needs the previous step's latents, kept
(one copy) only at the step before a preview is due.

When (:class:`PreviewSchedule`): after about 25 %, 50 % and 75 % of a render's steps
(:func:`preview_steps`), never more often than ``min_interval_s`` (PREVIEW_MIN_INTERVAL_S, default 2 s)
across the whole job; PREVIEWS=off makes no :class:`Previewer` at all. A batch of variations gives one
preview: a grid of its images (at most :data:`GRID_IMAGES`).
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from engine.previews import PreviewFrame
from engine.specs import EngineFamily


@dataclass(frozen=True)
class LatentRGB:
    """A linear latent -> RGB projection: ``rgb = latents · factors + bias`` per pixel, then [-1, 1] -> [0, 255]."""

    factors: tuple[tuple[float, float, float], ...]  # one (R, G, B) row per latent channel
    bias: tuple[float, float, float]
    source: str

    @property
    def channels(self) -> int:
        return len(self.factors)


# Both tables: ComfyUI, comfy/latent_formats.py (github.com/Comfy-Org/ComfyUI, read at commit 75399d78),
# ``latent_rgb_factors`` and ``latent_rgb_factors_bias`` of its class Flux (FLUX.1: 16 channels, in the
# scaled-and-shifted space the transformer sees) and class Flux2 (FLUX.2: 32 channels after its
# ``latent_rgb_factors_reshape``, which is diffusers' ``_unpatchify_latents``; ComfyUI gives FLUX.2 the
# same bias as FLUX.1).
# fmt: off
FLUX1_RGB = LatentRGB(
    factors=(
        (-0.0346, 0.0244, 0.0681), (0.0034, 0.0210, 0.0687), (0.0275, -0.0668, -0.0433), (-0.0174, 0.0160, 0.0617),
        (0.0859, 0.0721, 0.0329), (0.0004, 0.0383, 0.0115), (0.0405, 0.0861, 0.0915), (-0.0236, -0.0185, -0.0259),
        (-0.0245, 0.0250, 0.1180), (0.1008, 0.0755, -0.0421), (-0.0515, 0.0201, 0.0011), (0.0428, -0.0012, -0.0036),
        (0.0817, 0.0765, 0.0749), (-0.1264, -0.0522, -0.1103), (-0.0280, -0.0881, -0.0499), (-0.1262, -0.0982, -0.0778),
    ),
    bias=(-0.0329, -0.0718, -0.0851),
    source="ComfyUI comfy/latent_formats.py, class Flux",
)
FLUX2_RGB = LatentRGB(
    factors=(
        (0.0058, 0.0113, 0.0073), (0.0495, 0.0443, 0.0836), (-0.0099, 0.0096, 0.0644), (0.2144, 0.3009, 0.3652),
        (0.0166, -0.0039, -0.0054), (0.0157, 0.0103, -0.0160), (-0.0398, 0.0902, -0.0235), (-0.0052, 0.0095, 0.0109),
        (-0.3527, -0.2712, -0.1666), (-0.0301, -0.0356, -0.0180), (-0.0107, 0.0078, 0.0013), (0.0746, 0.0090, -0.0941),
        (0.0156, 0.0169, 0.0070), (-0.0034, -0.0040, -0.0114), (0.0032, 0.0181, 0.0080), (-0.0939, -0.0008, 0.0186),
        (0.0018, 0.0043, 0.0104), (0.0284, 0.0056, -0.0127), (-0.0024, -0.0022, -0.0030), (0.1207, -0.0026, 0.0065),
        (0.0128, 0.0101, 0.0142), (0.0137, -0.0072, -0.0007), (0.0095, 0.0092, -0.0059), (0.0000, -0.0077, -0.0049),
        (-0.0465, -0.0204, -0.0312), (0.0095, 0.0012, -0.0066), (0.0290, -0.0034, 0.0025), (0.0220, 0.0169, -0.0048),
        (-0.0332, -0.0457, -0.0468), (-0.0085, 0.0389, 0.0609), (-0.0076, 0.0003, -0.0043), (-0.0111, -0.0460, -0.0614),
    ),
    bias=(-0.0329, -0.0718, -0.0851),
    source="ComfyUI comfy/latent_formats.py, class Flux2",
)
# fmt: on
RGB_BY_FAMILY: dict[EngineFamily, LatentRGB] = {"kontext": FLUX1_RGB, "klein": FLUX2_RGB}

#: the fractions of a render's steps after which a preview is due
PREVIEW_FRACTIONS = (0.25, 0.5, 0.75)
#: longest side of a preview image, pixels
PREVIEW_SIDE = 512
PREVIEW_JPEG_QUALITY = 80
#: images of a batch shown in its preview grid
GRID_IMAGES = 4
DEFAULT_MIN_INTERVAL_S = 2.0


def preview_steps(steps: int, fractions: Sequence[float] = PREVIEW_FRACTIONS) -> frozenset[int]:
    """The steps (1-based) after which a render of ``steps`` steps shows a preview: the nearest step to
    each fraction, never the last one (the result follows it). One step: none."""
    if steps < 2:
        return frozenset()
    return frozenset(min(steps - 1, max(1, math.floor(steps * f + 0.5))) for f in fractions)


def spatial_latents(family: EngineFamily, pipe: Any, latents: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """The callback's packed latents as ``(B, C, height / 8, width / 8)`` (C: 16 Kontext, 32 klein)."""
    if family == "kontext":
        return pipe._unpack_latents(latents, height, width, pipe.vae_scale_factor)
    rows, cols = height // (pipe.vae_scale_factor * 2), width // (pipe.vae_scale_factor * 2)
    batch, tokens, channels = latents.shape
    if tokens != rows * cols:
        raise ValueError(f"klein latents have {tokens} tokens, a {width}x{height} render has {rows * cols}")
    grid = latents.reshape(batch, rows, cols, channels).permute(0, 3, 1, 2)  # tokens are row-major
    return pipe._unpatchify_latents(grid)


def project(latents: torch.Tensor, rgb: LatentRGB) -> torch.Tensor:
    """``(B, C, h, w)`` latents -> ``(B, h, w, 3)`` uint8 on the CPU."""
    if latents.shape[1] != rgb.channels:
        raise ValueError(f"{rgb.source} projects {rgb.channels} channels, the latents have {latents.shape[1]}")
    factors = torch.tensor(rgb.factors, device=latents.device, dtype=torch.float32)
    bias = torch.tensor(rgb.bias, device=latents.device, dtype=torch.float32)
    pixels = torch.einsum("bchw,cr->bhwr", latents.float(), factors) + bias
    return ((pixels + 1.0) * 127.5).clamp(0, 255).round().to(torch.uint8).cpu()


def preview_image(frames: torch.Tensor, side: int = PREVIEW_SIDE) -> Image.Image:
    """``(B, h, w, 3)`` uint8 frames as one image whose longer side is ``side``: one frame, or a grid
    (one row of two, or two rows of two) of the first :data:`GRID_IMAGES`."""
    frames = frames[:GRID_IMAGES]
    count, height, width, _ = frames.shape
    cols = 1 if count == 1 else 2
    rows = math.ceil(count / cols)
    sheet = torch.zeros((rows * height, cols * width, 3), dtype=torch.uint8)
    for index in range(count):
        row, col = divmod(index, cols)
        sheet[row * height : (row + 1) * height, col * width : (col + 1) * width] = frames[index]
    image = Image.fromarray(sheet.numpy(), "RGB")
    scale = side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR)


def encode_jpeg(image: Image.Image, quality: int = PREVIEW_JPEG_QUALITY) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def clean_estimate(pipe: Any, step: int, latents: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
    """The flow-matching estimate of the clean latents after step ``step`` (1-based), from that step's
    latents and the previous step's (Euler: ``x0 = x_prev - σ · (x - x_prev) / (σ_next - σ)``).
    The latents themselves when that cannot be told: no previous latents, another scheduler."""
    scheduler = pipe.scheduler
    sigmas = getattr(scheduler, "sigmas", None)
    euler = type(scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    if previous is None or sigmas is None or not euler or getattr(scheduler.config, "stochastic_sampling", False):
        return latents
    if step >= len(sigmas):
        return latents
    sigma, sigma_next = float(sigmas[step - 1]), float(sigmas[step])
    if sigma_next == sigma:
        return latents
    current, before = latents.float(), previous.float()
    velocity = (current - before) / (sigma_next - sigma)
    return before - sigma * velocity


@dataclass
class PreviewSchedule:
    """The job-wide gate: at most one preview per ``min_interval_s`` (``clock``: seconds, monotonic)."""

    min_interval_s: float = DEFAULT_MIN_INTERVAL_S
    clock: Callable[[], float] = time.monotonic
    _last: float | None = None

    def allow(self) -> bool:
        return self._last is None or self.clock() - self._last >= self.min_interval_s

    def mark(self) -> None:
        self._last = self.clock()


@dataclass
class Previewer:
    """One job's previews: :meth:`for_render` gives each render's ``on_latents(step, latents)`` hook;
    due previews go to ``emit`` as :class:`engine.previews.PreviewFrame` (in the engine's thread)."""

    job_id: str
    family: EngineFamily
    pipe: Any
    emit: Callable[[PreviewFrame], None]
    schedule: PreviewSchedule = field(default_factory=PreviewSchedule)
    side: int = PREVIEW_SIDE
    #: previews made in this job
    made: int = 0
    #: seconds spent making them (projection, resize, JPEG; reported by bench/previews.py)
    seconds: float = 0.0

    def for_render(
        self, width: int, height: int, steps: int, job_step: Callable[[int], tuple[int, int]]
    ) -> Callable[[int, torch.Tensor], None]:
        """The hook of one render of ``steps`` steps at ``width`` x ``height``; ``job_step(step)`` gives
        the job-wide ``(step, total)`` of its step ``step`` (the progress events' numbers)."""
        due = preview_steps(steps)
        rgb = RGB_BY_FAMILY[self.family]
        previous: torch.Tensor | None = None

        def on_latents(step: int, latents: torch.Tensor) -> None:
            nonlocal previous
            if step in due and self.schedule.allow():
                started = time.perf_counter()
                estimate = clean_estimate(self.pipe, step, latents, previous)
                frames = project(spatial_latents(self.family, self.pipe, estimate, width, height), rgb)
                image = preview_image(frames, self.side)
                self.made += 1
                self.schedule.mark()
                done, total = job_step(step)
                jpeg, (w, h), images = encode_jpeg(image), image.size, min(len(frames), GRID_IMAGES)
                frame = PreviewFrame(self.job_id, self.made, done, total, jpeg, w, h, images, time.time())
                self.seconds += time.perf_counter() - started
                self.emit(frame)
            previous = latents.detach().clone() if step + 1 in due else None

        return on_latents
