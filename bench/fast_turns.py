"""Fast-turn figures of one model (``bench/engine.py --fast-turns``): eager vs each compile mode,
persona switch time, a batch of 4 vs 4 one by one, and the first vs later turns of a thread.

Everything runs through the engine's own functions (engine.render.pipeline.render_batch, the persona
slot, engine.render.speedups); the thread caches are the ones engine.render.job_render keeps, reproduced here with
plain dicts: a turn reuses the prompt embeddings, the previous result's latents (Kontext) or the
references' VAE latents (klein).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from engine.render.loras import write_tiny_library
from engine.render.persona_slot import PersonaSlot, merge_loras
from engine.render.pipeline import LoadedPipeline, encode_context, encode_prompt, render_batch
from engine.render.references import compose_context
from engine.render.speedups import apply_speedups


def _sync(lp: LoadedPipeline) -> None:
    if lp.device.type == "cuda":
        torch.cuda.synchronize(lp.device)


def _timed(lp: LoadedPipeline, fn: Any) -> tuple[float, Any]:
    _sync(lp)
    started = time.perf_counter()
    out = fn()
    _sync(lp)
    return time.perf_counter() - started, out


def _random_personas(lp: LoadedPipeline, count: int, rank: int) -> list[dict[str, torch.Tensor]]:
    """``count`` merged persona LoRAs (3 random rank-``rank`` members each) for ``lp``'s transformer."""
    model = lp.family.tiny_model
    if lp.toy:
        root = Path(tempfile.mkdtemp(prefix="bench-loras-"))
        files = write_tiny_library(root, archetypes=("a",), per_archetype=3 * count, rank=rank, model=model)
        from engine.render.persona_slot import read_lora

        members = [read_lora(type(lp.pipe), f) for f in files]
    else:  # full size: random factors on the attention projections of every block
        generator = torch.Generator().manual_seed(0)
        members = []
        layers = [
            (n, m.in_features, m.out_features)
            for n, m in lp.pipe.transformer.named_modules()
            if isinstance(m, torch.nn.Linear) and n.endswith(("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0"))
        ]
        for _ in range(3 * count):
            members.append(
                {
                    f"transformer.{n}": (
                        torch.randn(rank, i, generator=generator) / i**0.5,
                        torch.randn(o, rank, generator=generator) * 0.01,
                        1.0,
                    )
                    for n, i, o in layers
                }
            )
    return [merge_loras([(m, 1 / 3) for m in members[3 * p : 3 * p + 3]]) for p in range(count)]


def measure(lp: LoadedPipeline, args: Any) -> dict:
    """All fast-turn figures of ``lp`` at ``args``' size: batch and turns eager, then the compile
    modes applied in place, in order (persona switches on the regionally compiled transformer)."""
    repeats = max(1, args.images)
    kw = {"width": args.width, "height": args.height, "steps": args.steps, "guidance": args.guidance}
    side = max(64, args.width // 2)
    products = [Image.new("RGB", (side, side), (40 + 80 * i, 90, 200)) for i in range(2)]
    embeds = encode_prompt(lp, args.prompt)
    out: dict[str, Any] = {}

    personas = _random_personas(lp, 5, rank=4 if lp.toy else 16)
    slot = PersonaSlot(lp.pipe, target_rank=3 * (4 if lp.toy else 16))
    slot.load(personas[0], key=0)  # the slot exists before any compile

    def edit(context: Any, seeds: list[int], refs: list[Image.Image] = (), encode: Any = None) -> list:
        with torch.inference_mode():
            return render_batch(lp, prompt=embeds, seeds=seeds, context=context, references=refs,
                                encode_reference=encode, **kw)  # fmt: skip

    with torch.inference_mode():
        start = render_batch(lp, prompt=embeds, seeds=[0], **kw)[0]
    context: Any = start.latents if lp.family.context_as_latents else start.image

    # -- a batch of 4 vs 4 one by one (eager: no graph per batch size) ----------------
    edit(context, [30, 31, 32, 33])  # warm-up
    batch_s = statistics.median(_timed(lp, lambda: edit(context, [30, 31, 32, 33]))[0] for _ in range(repeats))
    one_s = statistics.median(
        sum(_timed(lp, lambda s=s: edit(context, [s]))[0] for s in (30, 31, 32, 33)) for _ in range(repeats)
    )
    out["batch_of_4"] = {"batch_s": round(batch_s, 4), "sequential_s": round(one_s, 4),
                         "speedup": round(one_s / batch_s, 2)}  # fmt: skip

    # -- first vs later turns of a thread (2 product references; eager) ----------------------
    out["turns"] = _turns(lp, args, start.image, products, kw, edit)
    # -- eager vs compile modes ------------------------------------------------------------------
    modes: dict[str, dict] = {}
    for mode in ("none", "regional", "full"):
        if mode == "full":  # undo the regional compile: plain blocks inside one compiled transformer
            for block in lp.pipe.transformer.modules():
                if getattr(block, "_compiled_call_impl", None) is not None:
                    block._compiled_call_impl = None
            torch._dynamo.reset()
        if mode != "none":
            apply_speedups(lp, compile=mode, attention=args.attention)
        first_s, _ = _timed(lp, lambda: edit(context, [1]))
        runs = [_timed(lp, lambda i=i: edit(context, [10 + i]))[0] for i in range(repeats)]
        modes[mode] = {"first_render_s": round(first_s, 4), "render_s": round(statistics.median(runs), 4)}
        if mode == "regional":  # persona switches on the compiled transformer: hot swaps, no recompile
            switch, after = [], []
            with torch._dynamo.config.patch(error_on_recompile=True):
                for key, persona in enumerate([*personas[1:], personas[0]], start=1):
                    switch.append(_timed(lp, lambda p=persona, k=key: slot.load(p, key=k))[0])
                    after.append(_timed(lp, lambda: edit(context, [20]))[0])
            out["persona_switch"] = {
                "switch_ms": round(1000 * statistics.median(switch), 2),
                "render_after_switch_s": round(statistics.median(after), 4),
                "recompiles": 0,  # error_on_recompile would have raised
                "slot_rebuilds": slot.rebuilds,
            }
    eager = modes["none"]["render_s"]
    for figures in modes.values():
        figures["speedup_vs_eager"] = round(eager / figures["render_s"], 2)
    out["compile"] = modes

    return out


def _turns(lp: LoadedPipeline, args: Any, current: Image.Image, products: list, kw: dict, edit: Any) -> dict:
    """Turn 1 encodes the prompt and every reference; later turns reuse what the thread cached."""
    cache: dict[Any, Any] = {}
    times = []
    for turn in range(4):
        _sync(lp)
        started = time.perf_counter()
        prompt = cache.get("prompt")
        if prompt is None:
            prompt = cache["prompt"] = encode_prompt(lp, args.prompt + " (edit)")
        if not lp.family.native_references:  # the current image + products composed: one context per current image
            key = ("ctx", id(current))
            if key not in cache:
                composite = compose_context(current, products, args.width, args.height, lp.multiple_of)
                cache[key] = encode_context(lp, composite, *composite.size)
            context, refs, encode = cache[key], [], None
        else:
            names = [("img", id(current)), "p0", "p1"]

            def encode(i: int, pixels: torch.Tensor, own: Any, names: list = names) -> torch.Tensor:
                if names[i] not in cache:
                    cache[names[i]] = own(image=pixels, generator=None)
                return cache[names[i]]

            context, refs = current, products
        with torch.inference_mode():
            result = render_batch(lp, prompt=prompt, seeds=[40 + turn], context=context, references=refs,
                                  encode_reference=encode, **kw)[0]  # fmt: skip
        _sync(lp)
        times.append(time.perf_counter() - started)
        current = result.image
    return {"first_turn_s": round(times[0], 4), "later_turn_s": round(statistics.median(times[1:]), 4),
            "references": 2}  # fmt: skip
