"""The engine families as objects: what differs between FLUX.1 Kontext and FLUX.2 [klein] when rendering.

A :class:`RenderFamily` is the family's facts (engine.specs.FamilyFacts, which the commands layer
reads without loading a model: limits, defaults, LoRA folder) plus its rendering steps, so the rest
of the engine asks the family instead of testing its name:

- **references**: Kontext has one context image, so references are composed into it
  (engine.render.references builds the strip); klein takes a native list of at most
  :attr:`RenderFamily.max_references` images (``native_references``);
- **text**: :meth:`RenderFamily.encode_prompt` (Kontext: CLIP + T5; klein: stacked Qwen3 states);
- **defaults**: :meth:`RenderFamily.default_params` (Kontext-dev: 28 steps, guidance 2.5; klein: 4 distilled steps);
- **LoRA library**: :meth:`RenderFamily.lora_root` (``LORA_DIR/<family>/``);
- **loading**: :attr:`RenderFamily.pipeline_class`, :meth:`RenderFamily.load` (tiny built offline),
  :meth:`RenderFamily.build_tiny`, :meth:`RenderFamily.text_encoding` (token limit, stacked layers).

- **previews**: :attr:`RenderFamily.latent_rgb` (latent channels -> RGB without the VAE,
  engine.render.latent_rgb) and :meth:`RenderFamily.spatial_latents` (the step callback's packed
  latents as channels x height x width); engine.render.previews makes the images.

Extension point, not implemented yet: :meth:`RenderFamily.inpaint_pipeline` (region edits: the
family's masked pipeline sharing the loaded components). Training's per-family steps live beside
it, in engine.training.families (TrainFamily).

The heavy imports (torch, diffusers) happen inside the methods that load or run a model.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from engine.render.latent_rgb import FLUX1_RGB, FLUX2_RGB, LatentRGB
from engine.specs import (
    KLEIN_FACTS,
    KONTEXT_FACTS,
    TINY_MODELS,
    EngineFamily,
    FamilyFacts,
    model_family,
)

if TYPE_CHECKING:
    import torch


log = logging.getLogger(__name__)

#: T5 / Qwen3 tokens per prompt at most on real weights
REAL_MAX_SEQUENCE_LENGTH = 512


def _facts(facts: FamilyFacts) -> dict[str, Any]:
    return {field.name: getattr(facts, field.name) for field in fields(facts)}


class PipelineState(Protocol):
    """What a family reads of the loaded pipeline (engine.render.pipeline.LoadedPipeline)."""

    pipe: Any
    max_sequence_length: int
    text_encoder_out_layers: tuple[int, ...]

    @property
    def execution_device(self) -> torch.device: ...


@dataclass(frozen=True, eq=False)
class RenderFamily(FamilyFacts):
    """One engine family's rendering steps beside its facts (engine.specs.FamilyFacts: names,
    reference limit, render defaults, LoRA library folder)."""

    #: the current image enters as latents of the previous result (Kontext) or as an image (klein)
    context_as_latents: bool = True
    #: a separate Base transformer may train beside the distilled one (ENGINE_TRAIN_MODEL)
    trains_on_base_model: bool = False
    #: live previews: the linear latent channels -> RGB projection (``None``: the family has no previews)
    latent_rgb: LatentRGB | None = None

    @property
    def native_references(self) -> bool:
        """References enter as a native image list (klein) rather than composed into the context (Kontext)."""
        return self.max_references is not None

    # -- loading -------------------------------------------------------------------------------
    def build_tiny(self, seed: int = 0) -> Any:
        """The family's tiny random pipeline, built offline."""
        raise NotImplementedError

    def tiny_transformer(self) -> Any:
        """The tiny model's transformer with random weights, for shapes (call it under ``torch.device("meta")``)."""
        raise NotImplementedError

    def _tiny_in(self, torch_dtype: torch.dtype) -> Any:
        """The tiny pipeline (offline: nothing may reach the hub) in ``torch_dtype``."""
        import torch

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        pipe = self.build_tiny()
        if torch_dtype != torch.float32:
            pipe.to(dtype=torch_dtype)
        return pipe

    def load(self, model: str, torch_dtype: torch.dtype) -> Any:
        """The family's pipeline of ``model`` (its tiny model built offline, anything else through
        ``from_pretrained``), on the CPU, progress bars off."""
        raise NotImplementedError

    def text_encoding(self, pipe: Any) -> tuple[int, tuple[int, ...]]:
        """How ``pipe`` encodes text: tokens per prompt at most, and the text encoder's hidden
        layers stacked into the prompt embeddings (``()``: its usual output)."""
        raise NotImplementedError

    # -- rendering -----------------------------------------------------------------------------
    def encode_prompt(self, lp: PipelineState, prompt: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The prompt's sequence embeddings and pooled embedding (``None`` where the family has
        none); the persona LoRAs never touch the text encoders."""
        raise NotImplementedError

    def spatial_latents(self, pipe: Any, latents: torch.Tensor, width: int, height: int) -> torch.Tensor:
        """The latents ``callback_on_step_end`` sees for a ``width`` x ``height`` render, as
        ``(B, channels, height / 8, width / 8)``: the channels :attr:`latent_rgb` projects."""
        raise NotImplementedError

    def inpaint_pipeline(self, lp: PipelineState) -> Any:
        """Region edits (extension point): the family's masked-edit pipeline built from ``lp``'s
        loaded components (``from_pipe``)."""
        raise NotImplementedError(f"region edits are not available on {self.label} yet")


@dataclass(frozen=True, eq=False)
class KontextFamily(RenderFamily):
    def build_tiny(self, seed: int = 0) -> Any:
        from engine.render.tiny_kontext import build_tiny_pipeline

        return build_tiny_pipeline(seed=seed)

    def tiny_transformer(self) -> Any:
        from diffusers import FluxTransformer2DModel

        from engine.render.tiny_kontext import TINY_TRANSFORMER_CONFIG

        return FluxTransformer2DModel(**TINY_TRANSFORMER_CONFIG)  # type: ignore[arg-type]

    def load(self, model: str, torch_dtype: torch.dtype) -> Any:
        from diffusers import FluxKontextPipeline

        if model == self.tiny_model:
            return self._tiny_in(torch_dtype)
        folder = Path(model).expanduser()
        source = str(folder) if folder.is_dir() else model
        log.info("loading %s (%s, %s)", source, torch_dtype, self.label)
        pipe = FluxKontextPipeline.from_pretrained(source, dtype=torch_dtype)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def text_encoding(self, pipe: Any) -> tuple[int, tuple[int, ...]]:
        return min(REAL_MAX_SEQUENCE_LENGTH, int(pipe.tokenizer_2.model_max_length)), ()  # T5

    def encode_prompt(self, lp: PipelineState, prompt: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        embeds, pooled, _ = lp.pipe.encode_prompt(
            prompt=prompt, prompt_2=None, device=lp.execution_device, max_sequence_length=lp.max_sequence_length
        )
        return embeds, pooled  # T5 sequence, pooled CLIP

    def spatial_latents(self, pipe: Any, latents: torch.Tensor, width: int, height: int) -> torch.Tensor:
        return pipe._unpack_latents(latents, height, width, pipe.vae_scale_factor)  # packed 2x2 -> 16 channels


@dataclass(frozen=True, eq=False)
class KleinFamily(RenderFamily):
    def build_tiny(self, seed: int = 0) -> Any:
        from engine.render.tiny_klein import build_tiny_klein_pipeline

        return build_tiny_klein_pipeline(seed=seed)

    def tiny_transformer(self) -> Any:
        from diffusers import Flux2Transformer2DModel

        from engine.render.tiny_klein import TINY_KLEIN_TRANSFORMER_CONFIG

        return Flux2Transformer2DModel(**TINY_KLEIN_TRANSFORMER_CONFIG)

    def load(self, model: str, torch_dtype: torch.dtype) -> Any:
        from engine.render.klein_pipeline import load_klein_pipeline

        if model == self.tiny_model:
            return self._tiny_in(torch_dtype)
        return load_klein_pipeline(model, torch_dtype)

    def text_encoding(self, pipe: Any) -> tuple[int, tuple[int, ...]]:
        from engine.render.klein_pipeline import out_layers

        return min(REAL_MAX_SEQUENCE_LENGTH, int(pipe.tokenizer.model_max_length)), out_layers(pipe)  # Qwen3

    def encode_prompt(self, lp: PipelineState, prompt: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        from engine.render.klein_pipeline import encode_klein_prompt

        embeds = encode_klein_prompt(
            lp.pipe, prompt, lp.execution_device, lp.max_sequence_length, lp.text_encoder_out_layers
        )
        return embeds, None  # stacked Qwen3 hidden states, no pooled embedding

    def spatial_latents(self, pipe: Any, latents: torch.Tensor, width: int, height: int) -> torch.Tensor:
        # (B, tokens, 128): patchified 2x2 and batch-norm normalised, tokens in row-major order
        # (Flux2KleinPipeline._prepare_latent_ids); unpatchified -> 32 channels, still normalised:
        # the space the FLUX.2 factors were fitted in (engine.render.latent_rgb)
        rows, cols = height // (pipe.vae_scale_factor * 2), width // (pipe.vae_scale_factor * 2)
        batch, tokens, channels = latents.shape
        if tokens != rows * cols:
            raise ValueError(f"klein latents have {tokens} tokens, a {width}x{height} render has {rows * cols}")
        grid = latents.reshape(batch, rows, cols, channels).permute(0, 3, 1, 2)
        return pipe._unpatchify_latents(grid)


KONTEXT = KontextFamily(
    **_facts(KONTEXT_FACTS), context_as_latents=True, trains_on_base_model=False, latent_rgb=FLUX1_RGB
)
KLEIN = KleinFamily(**_facts(KLEIN_FACTS), context_as_latents=False, trains_on_base_model=True, latent_rgb=FLUX2_RGB)
RENDER_FAMILIES: dict[EngineFamily, RenderFamily] = {family.name: family for family in (KONTEXT, KLEIN)}


def render_family(name: EngineFamily) -> RenderFamily:
    """The family object of a family name (``kontext``, ``klein``)."""
    try:
        return RENDER_FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown engine family {name!r}; expected one of {', '.join(RENDER_FAMILIES)}") from None


def family_of(model: str) -> RenderFamily:
    """The family of a model name, hub id or folder, decided without loading anything
    (engine.specs.model_family)."""
    return render_family(model_family(model))


def tiny_family(model: str) -> RenderFamily | None:
    """The family of a tiny model name, or ``None`` for real weights."""
    name = TINY_MODELS.get(model)
    return None if name is None else RENDER_FAMILIES[name]
