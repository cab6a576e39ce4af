"""Making live previews of a render from its latents, between denoising steps.

No VAE decode: a linear projection of the latent channels to RGB (the family's ``latent_rgb``, data
in engine.render.latent_rgb), computed from the step's latents in the pipeline's ``callback_on_step_end``
(engine.render.pipeline.render_batch's ``on_latents``), upscaled to about 512 px and JPEG-encoded.
How a family's packed latents unpack is its ``spatial_latents`` (engine.render.families):

* FLUX.1 Kontext: the callback's latents are packed 2x2 tokens ``(B, h/16 * w/16, 64)``; unpacked by
  the pipeline's own ``_unpack_latents`` into 16 channels at 1/8 of the image size.
* FLUX.2 klein: the callback's latents are patchified ``(B, h/16 * w/16, 128)`` tokens in row-major
  order, normalised with the VAE's batch-norm statistics; unpatchified by the pipeline's own
  ``_unpatchify_latents`` into 32 channels at 1/8 of the image size. The FLUX.2 factors were
  fitted in that normalised space (ComfyUI's FLUX.2 VAE applies the batch norm inside its own
  encoder/decoder, ``batch_norm_latent`` in comfy/sd.py, and its sampler previews what the model
  sees), so the batch norm is not undone here.

The projection is applied to the flow-matching estimate of the clean image, not to the noisy
latents themselves: with the Euler scheduler the step's velocity is ``(x_next - x_prev) / (σ_next - σ)``
and the clean estimate ``x_prev - σ · velocity``; at 25 % of the steps the noisy latents are still
mostly noise, the estimate already shows the composition. It needs the previous step's latents,
kept only at the step before a preview is due.

Cheap by construction (:class:`TokenProjection`): the projection is folded into the packed token
space once (unit tokens through the family's own unpacking), so a step's work is one small matmul
of its tokens (no unpacking, and what is kept of the previous step is its 12 numbers per token);
:func:`project` is the same projection on unpacked latents (the reference the tests compare with).

When (:class:`PreviewSchedule`): after about 25 %, 50 % and 75 % of a render's steps
(:func:`preview_steps`), never more often than ``min_interval_s`` (PREVIEW_MIN_INTERVAL_S, default 2 s)
across the whole job; PREVIEWS=off makes no :class:`Previewer` at all. A batch of variations gives one
preview: a grid of its images (at most :data:`GRID_IMAGES`).
"""

from __future__ import annotations

import contextlib
import io
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from engine.previews import PreviewFrame
from engine.render.latent_rgb import LatentRGB

if TYPE_CHECKING:
    from engine.render.families import RenderFamily


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
    The latents themselves when that cannot be told: no previous latents, another scheduler. Affine
    with weights summing to 1, so it may be taken of any linear projection of the latents."""
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
    family: RenderFamily
    pipe: Any
    emit: Callable[[PreviewFrame], None]
    schedule: PreviewSchedule = field(default_factory=PreviewSchedule)
    side: int = PREVIEW_SIDE
    #: previews made in this job
    made: int = 0
    #: seconds spent making them (projection, resize, JPEG; reported by bench/previews.py)
    seconds: float = 0.0
    _projections: dict[tuple[int, str], TokenProjection] = field(default_factory=dict, repr=False)

    def for_render(
        self, width: int, height: int, steps: int, job_step: Callable[[int], tuple[int, int]]
    ) -> Callable[[int, torch.Tensor], None]:
        """The hook of one render of ``steps`` steps at ``width`` x ``height``; ``job_step(step)`` gives
        the job-wide ``(step, total)`` of its step ``step`` (the progress events' numbers)."""
        due = preview_steps(steps) if self.family.latent_rgb is not None else frozenset()
        previous: torch.Tensor | None = None  # the previous step's tokens, projected (no bias)

        def on_latents(step: int, latents: torch.Tensor) -> None:
            nonlocal previous
            if step in due and self.schedule.allow():
                started = time.perf_counter()
                projection = self._projection(latents)
                with _one_thread(latents):
                    estimate = clean_estimate(self.pipe, step, projection.apply(latents), previous)
                    frames = projection.frames(estimate, width, height, self.pipe.vae_scale_factor * 2)
                image = preview_image(frames, self.side)
                self.made += 1
                self.schedule.mark()
                done, total = job_step(step)
                jpeg, (w, h), images = encode_jpeg(image), image.size, min(len(frames), GRID_IMAGES)
                frame = PreviewFrame(self.job_id, self.made, done, total, jpeg, w, h, images, time.time())
                self.seconds += time.perf_counter() - started
                self.emit(frame)
            if step + 1 in due:
                started = time.perf_counter()
                with _one_thread(latents):
                    previous = self._projection(latents).apply(latents)
                self.seconds += time.perf_counter() - started
            else:
                previous = None

        return on_latents

    def _projection(self, latents: torch.Tensor) -> TokenProjection:
        key = (int(latents.shape[-1]), str(latents.device))
        if self._projections.get(key) is None:
            self._projections[key] = TokenProjection.of(self.family, self.pipe, key[0], latents.device)
        return self._projections[key]


@contextlib.contextmanager
def _one_thread(latents: torch.Tensor) -> Iterator[None]:
    """On the CPU, a preview's few small tensor ops run on one torch thread: spread over the busy
    intra-op pool they wait on its synchronisation (about 100x slower on a loaded 2-core host)."""
    if latents.device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class TokenProjection:
    """A family's latent -> RGB projection folded into the step callback's token space: one matmul per
    step takes the packed tokens ``(B, T, K)`` to the RGB of each token's ``cell`` x ``cell`` pixels of
    the latent grid (no unpacking of the latents, no copy of them kept between steps). Linear, so the
    clean-image estimate can be taken after it; the bias is added last (:meth:`frames`)."""

    matrix: torch.Tensor  # (K, cell * cell * 3)
    bias: torch.Tensor  # (cell * cell * 3,)
    cell: int

    @classmethod
    def of(cls, family: RenderFamily, pipe: Any, token_channels: int, device: torch.device) -> TokenProjection:
        """Built by passing unit tokens through the family's own unpacking (``spatial_latents``)."""
        rgb = family.latent_rgb
        assert rgb is not None
        side = pipe.vae_scale_factor * 2  # one token's pixels a side
        unit = torch.eye(token_channels).reshape(token_channels, 1, token_channels)
        spatial = family.spatial_latents(pipe, unit, side, side)  # (K, C, cell, cell)
        factors = torch.tensor(rgb.factors, dtype=torch.float32)
        matrix = torch.einsum("kchw,cr->khwr", spatial.float(), factors).reshape(token_channels, -1)
        cell = int(spatial.shape[-1])
        bias = torch.tensor(rgb.bias, dtype=torch.float32).repeat(cell * cell)
        return cls(matrix.to(device), bias.to(device), cell)

    def apply(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, T, K)`` tokens -> ``(B, T, cell * cell * 3)`` RGB without the bias (float32)."""
        return tokens.float() @ self.matrix

    def frames(self, projected: torch.Tensor, width: int, height: int, patch: int) -> torch.Tensor:
        """Projected tokens of a ``width`` x ``height`` render (``patch`` pixels a token) -> ``(B, h, w, 3)``
        uint8 frames on the CPU, at the latent grid's size."""
        rows, cols = height // patch, width // patch
        batch, tokens, _ = projected.shape
        if tokens != rows * cols:
            raise ValueError(f"the latents have {tokens} tokens, a {width}x{height} render has {rows * cols}")
        cell = self.cell
        pixels = (projected + self.bias).reshape(batch, rows, cols, cell, cell, 3).permute(0, 1, 3, 2, 4, 5)
        pixels = pixels.reshape(batch, rows * cell, cols * cell, 3)
        return ((pixels + 1.0) * 127.5).clamp(0, 255).round().to(torch.uint8).cpu()
