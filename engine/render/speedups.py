"""Making the loaded transformer fast without changing its output: the attention backend, fused
Q/K/V projections and ``torch.compile`` (ENGINE_COMPILE / ENGINE_ATTENTION / ENGINE_FUSE_QKV), and
the warm-up that compiles at start-up instead of in a user's first turn.

* ``regional``: diffusers' ``compile_repeated_blocks``: each class in the transformer's
  ``_repeated_blocks`` (FLUX.1: FluxTransformerBlock + FluxSingleTransformerBlock; FLUX.2:
  Flux2TransformerBlock + Flux2SingleTransformerBlock) is compiled once and reused by all its
  instances: compile time of two blocks, most of the speed of ``full``.
* ``full``: the whole transformer, one graph.

Both compile with ``fullgraph=True`` and static shapes: every output size, batch size and number
of reference tokens is its own graph, compiled on first use; :func:`warm_up` renders the default
size (text-to-image and an edit) at load so the common turn never waits for a compile. Persona
swaps go through engine.render.persona_slot (hot-swap), which keeps the graphs: the slot must exist
(its first LoRA loaded) before the transformer is compiled.

Fused Q/K/V (one matmul instead of three) reads the base weights: a LoRA on ``to_q``/``to_k``/
``to_v`` would be bypassed, so :func:`apply_speedups` refuses to fuse when the persona slot adapts
those layers (FLUX.2's single blocks are fused by design; only its double blocks fuse).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PIL import Image

if TYPE_CHECKING:
    from engine.render.pipeline import LoadedPipeline

log = logging.getLogger(__name__)

COMPILE_MODES: tuple[str, ...] = ("none", "regional", "full")
#: peft-wrapped layers that fused Q/K/V would bypass
_QKV_LAYERS = (".to_q", ".to_k", ".to_v", ".add_q_proj", ".add_k_proj", ".add_v_proj")


def attention_backends() -> list[str]:
    """The attention backend names diffusers knows (availability depends on installed kernels)."""
    from diffusers.models.attention_dispatch import AttentionBackendName

    return sorted(member.value for member in AttentionBackendName)


def lora_on_qkv(transformer: Any) -> list[str]:
    """Names of Q/K/V projection layers that carry a LoRA (peft wraps them)."""
    return [
        name
        for name, module in transformer.named_modules()
        if name.endswith(_QKV_LAYERS) and hasattr(module, "lora_A") and len(module.lora_A) > 0
    ]


def apply_speedups(
    lp: LoadedPipeline,
    *,
    compile: str = "none",
    attention: str | None = None,
    fuse_qkv: bool = False,
    backend: str | Callable[..., Any] = "inductor",
) -> None:
    """Set the attention backend, fuse Q/K/V and compile ``lp``'s transformer (in that order).

    ValueError, before anything changes, on an unknown mode or backend, or fused Q/K/V with a LoRA
    on those layers. ``backend`` is torch.compile's (tests pass a counting backend)."""
    transformer = lp.pipe.transformer
    if compile not in COMPILE_MODES:
        raise ValueError(f"ENGINE_COMPILE={compile!r}: expected one of {', '.join(COMPILE_MODES)}")
    if attention and attention not in attention_backends():
        raise ValueError(f"ENGINE_ATTENTION={attention!r}: expected one of {', '.join(attention_backends())}")
    if fuse_qkv and (bypassed := lora_on_qkv(transformer)):
        raise ValueError(
            f"ENGINE_FUSE_QKV would bypass the persona LoRA on {len(bypassed)} Q/K/V layers "
            f"(e.g. {bypassed[0]}); unset it or use LoRAs without Q/K/V layers"
        )
    if attention:
        transformer.set_attention_backend(attention)
    if fuse_qkv:
        transformer.fuse_qkv_projections()
    if compile == "regional":
        if not getattr(transformer, "_repeated_blocks", None):
            raise ValueError(f"{type(transformer).__name__} declares no _repeated_blocks: use ENGINE_COMPILE=full")
        transformer.compile_repeated_blocks(fullgraph=True, dynamic=False, backend=backend)
    elif compile == "full":
        transformer.compile(fullgraph=True, dynamic=False, backend=backend)


def warm_up(lp: LoadedPipeline, width: int, height: int, steps: int, guidance: float) -> float:
    """Render the default size once as text-to-image and once as an edit of that image (klein:
    with it as the one reference): the shapes of a post's first image and of every later turn are
    compiled now. Returns the seconds it took."""
    import torch

    from engine.render.pipeline import render

    started = time.perf_counter()
    size = {"width": width, "height": height, "steps": steps, "guidance": guidance}
    with torch.inference_mode():
        first: Image.Image = render(lp, prompt="warm-up", seed=0, **size)
        render(lp, prompt="warm-up", seed=1, context=first, **size)
    seconds = time.perf_counter() - started
    log.info("warm-up at %dx%d took %.1f s", width, height, seconds)
    return seconds
