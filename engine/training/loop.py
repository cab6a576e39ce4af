"""Training a persona LoRA: flow matching on the family's transformer, with checkpoints.

The objective is the one of diffusers' DreamBooth LoRA scripts for FLUX (written here, not
copied): for a sample's latents ``x0`` draw noise ``n`` and ``sigma`` (uniform ``u`` shifted like
the scheduler, ``sigma = s u / (1 + (s - 1) u)``), feed ``(1 - sigma) x0 + sigma n`` and regress
the prediction on ``n - x0`` (mean squared error). Latents and caption embeddings are computed
once per sample and kept by sample index, so a caption is never paired with another image.

Every step draws its sample, noise and sigma from ``(seed, step)`` alone, so a run resumed from a
checkpoint takes the same steps as one that never stopped. A checkpoint (the LoRA tensors, AdamW's
state, the losses) goes to a :class:`CheckpointStore` every ``checkpoint_every`` steps.
"""

from __future__ import annotations

import io
import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch
from PIL import Image

from engine.errors import JobCancelled
from engine.render.persona_lora import adapter_metadata, adapter_state, add_training_adapter

if TYPE_CHECKING:
    from engine.render.pipeline import LoadedPipeline
    from engine.training.families import TrainFamily

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    steps: int = 500
    rank: int = 16
    alpha: float | None = None  # None: alpha = rank (scale 1), as diffusers' scripts default
    lr: float = 1e-4
    resolution: int = 1024
    guidance: float = 3.5  # the guidance embedding's input for guidance-distilled transformers
    shift: float = 3.0
    checkpoint_every: int = 50
    seed: int = 0
    max_grad_norm: float = 1.0
    gradient_checkpointing: bool | None = None  # None: on CUDA only

    @property
    def lora_alpha(self) -> float:
        return float(self.rank if self.alpha is None else self.alpha)


@dataclass
class Sample:
    image: Image.Image
    caption: str


@dataclass
class Encoded:
    """A sample as training uses it: latents and caption conditioning, computed once."""

    latents: torch.Tensor
    cond: dict[str, torch.Tensor]


@dataclass
class TrainOutcome:
    state: dict[str, torch.Tensor]
    metadata: dict[str, Any]
    losses: list[float]
    eval_before: float
    eval_after: float
    resumed_from: int
    seconds: float
    seconds_per_step: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class CheckpointStore(Protocol):
    def load(self) -> bytes | None: ...

    def save(self, data: bytes) -> None: ...


class BlobCheckpoints:
    """Checkpoints of one job in the blob store, under the name ``train/<job id>/<what>``."""

    def __init__(self, blobs: Any, job_id: str, what: str = "checkpoint") -> None:
        self.blobs = blobs
        self.name = f"train/{job_id}/{what}"

    def load(self) -> bytes | None:
        return self.blobs.get_named(self.name)

    def save(self, data: bytes) -> None:
        self.blobs.put_named(self.name, data)

    def clear(self) -> None:
        self.blobs.delete_named(self.name)


def encode_samples(lp: LoadedPipeline, family: TrainFamily, samples: Sequence[Sample], size: int) -> list[Encoded]:
    with torch.no_grad():
        return [
            Encoded(family.encode_image(lp, s.image, size).float(), family.encode_caption(lp, s.caption))
            for s in samples
        ]


def _draw(config: TrainConfig, step: int, n: int, shape: torch.Size) -> tuple[int, torch.Tensor, torch.Tensor]:
    """Sample index, noise and sigma of ``step``: a function of ``(seed, step)`` only."""
    gen = torch.Generator().manual_seed((config.seed * 1_000_003 + step) % 2**63)
    index = int(torch.randint(n, (1,), generator=gen))
    noise = torch.randn(shape, generator=gen)
    u = torch.rand(1, generator=gen)
    sigma = config.shift * u / (1 + (config.shift - 1) * u)
    return index, noise, sigma


def flow_loss(
    lp: LoadedPipeline,
    family: TrainFamily,
    sample: Encoded,
    noise: torch.Tensor,
    sigma: torch.Tensor,
    guidance: float,
) -> torch.Tensor:
    device = lp.execution_device
    x0 = sample.latents.to(device)
    noise = noise.to(device)
    sigma = sigma.to(device)
    noisy = (1 - sigma.view(-1, 1, 1, 1)) * x0 + sigma.view(-1, 1, 1, 1) * noise
    pred = family.predict(lp, noisy, sigma, sample.cond, guidance)
    return torch.nn.functional.mse_loss(pred.float(), (noise - x0).float())


def eval_loss(
    lp: LoadedPipeline,
    family: TrainFamily,
    encoded: Sequence[Encoded],
    config: TrainConfig,
    sigmas: Sequence[float] = (0.25, 0.5, 0.75),
    seed: int = 1234,
) -> float:
    """Mean loss over every sample at fixed ``sigmas`` with fixed noise: comparable across steps."""
    gen = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    with torch.no_grad():
        for sample in encoded:
            for s in sigmas:
                noise = torch.randn(sample.latents.shape, generator=gen)
                loss = flow_loss(lp, family, sample, noise, torch.tensor([s]), config.guidance)
                total += float(loss)
                count += 1
    return total / max(1, count)


def train_lora(
    lp: LoadedPipeline,
    family: TrainFamily,
    samples: Sequence[Sample],
    config: TrainConfig,
    *,
    adapter: str = "persona_training",
    checkpoints: CheckpointStore | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    after_training: Callable[[], None] | None = None,
) -> TrainOutcome:
    """Train a LoRA ``adapter`` on ``samples``; the adapter is removed again when this returns
    (``after_training()`` runs just before, with the trained adapter active)."""
    if not samples:
        raise ValueError("no training images")
    started = time.perf_counter()
    transformer = family.transformer(lp)
    encoded = encode_samples(lp, family, samples, config.resolution)
    with torch.random.fork_rng(devices=[]):  # the LoRA's initial A comes from the seed too
        torch.manual_seed(config.seed)
        params = add_training_adapter(
            transformer, adapter, rank=config.rank, alpha=config.lora_alpha, targets=family.target_modules
        )
    checkpointing = config.gradient_checkpointing
    if checkpointing is None:
        checkpointing = lp.execution_device.type == "cuda"
    try:
        optimizer = torch.optim.AdamW(params, lr=config.lr, betas=(0.9, 0.999), weight_decay=1e-4, eps=1e-8)
        losses: list[float] = []
        start = 0
        eval_before = eval_loss(lp, family, encoded, config)
        saved = checkpoints.load() if checkpoints is not None else None
        if saved is not None:
            start, losses, eval_before = _restore(saved, transformer, params, optimizer)
            log.info("resuming training from step %d", start)
        if checkpointing:
            transformer.enable_gradient_checkpointing()
        transformer.train()
        loop_started, timed_steps = time.perf_counter(), 0
        for step in range(start, config.steps):
            if cancel is not None and cancel():
                raise JobCancelled("training cancelled")
            index, noise, sigma = _draw(config, step, len(encoded), encoded[0].latents.shape)
            loss = flow_loss(lp, family, encoded[index], noise, sigma, config.guidance)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            timed_steps += 1
            done = step + 1
            if checkpoints is not None and (done % config.checkpoint_every == 0) and done < config.steps:
                checkpoints.save(_snapshot(done, losses, eval_before, transformer, params, optimizer))
            if on_step is not None:
                on_step(done, config.steps, losses[-1])
        loop_seconds = time.perf_counter() - loop_started
        transformer.eval()
        eval_after = eval_loss(lp, family, encoded, config)
        if after_training is not None:
            after_training()
        return TrainOutcome(
            state=adapter_state(transformer, adapter),
            metadata=adapter_metadata(transformer, adapter),
            losses=losses,
            eval_before=eval_before,
            eval_after=eval_after,
            resumed_from=start,
            seconds=time.perf_counter() - started,
            seconds_per_step=loop_seconds / timed_steps if timed_steps else None,
        )
    finally:
        if checkpointing:
            transformer.disable_gradient_checkpointing()
        transformer.eval()
        with warnings.catch_warnings():  # peft says which adapter it activates instead: the engine resets them
            warnings.filterwarnings("ignore", message="Adapter .* was active which is now deleted")
            transformer.delete_adapters(adapter)
        transformer.requires_grad_(False)


def _names(transformer: torch.nn.Module, params: list[torch.nn.Parameter]) -> list[str]:
    ids = {id(p): n for n, p in transformer.named_parameters()}
    return [ids[id(p)] for p in params]


def _snapshot(
    step: int,
    losses: list[float],
    eval_before: float,
    transformer: torch.nn.Module,
    params: list[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
) -> bytes:
    buf = io.BytesIO()
    torch.save(
        {
            "step": step,
            "losses": losses,
            "eval_before": eval_before,
            "names": _names(transformer, params),
            "params": [p.detach().cpu().clone() for p in params],
            "optimizer": optimizer.state_dict(),
        },
        buf,
    )
    return buf.getvalue()


def _restore(
    data: bytes, transformer: torch.nn.Module, params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer
) -> tuple[int, list[float], float]:
    saved = torch.load(io.BytesIO(data), weights_only=True)
    if saved["names"] != _names(transformer, params):
        raise ValueError("the checkpoint does not fit this LoRA (other rank or layers)")
    with torch.no_grad():
        for param, value in zip(params, saved["params"], strict=True):
            param.copy_(value.to(param.device, param.dtype))
    optimizer.load_state_dict(saved["optimizer"])
    return int(saved["step"]), [float(v) for v in saved["losses"]], float(saved["eval_before"])
