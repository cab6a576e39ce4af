"""Benchmark the engine's render path: seconds per step and per image, and peak memory, as JSON.

    python bench/engine.py                                  # tiny model on the CPU, 64x64, 4 steps
    python bench/engine.py --model full --device cuda       # full-size Kontext transformer, random weights
    python bench/engine.py --model full --device cuda --compile regional --attention _native_flash
    python bench/engine.py --model /models/FLUX.1-Kontext-dev --device cuda --width 1024 --height 1024

``--model full`` builds the FLUX.1 Kontext [dev] transformer (19 double + 38 single blocks, 3072
wide, guidance embeddings) and the full FLUX VAE with random weights straight on the device: no
download. Its text encoders are one-layer stand-ins with the real output widths (T5 4096, CLIP
768) and 512 T5 tokens, so the denoising steps see the real shapes; text encoding time is not
representative in that mode. Every image runs through ``engine.render.pipeline.render``, the code path
of the worker. ``--edit`` adds a Kontext edit (context image of the output size: twice the image
tokens per step).

Both engine families: ``--model tiny-klein`` (FLUX.2 klein, tiny) and ``--model full-klein``
(klein 4B: 5 double + 20 single blocks, 3072 wide, no guidance embedding, the FLUX.2 VAE, a one-layer
Qwen3 stand-in of the real width, random weights). ``--references N`` adds N product images to
every render (klein: as references; Kontext: composed into the context, engine.render.references), and
the edit then conditions on the current image plus them. ``--compare`` runs the tiny families side
by side with 1-3 references (``--compare-models`` to choose others, e.g. ``full,full-klein``).
``--fast-turns`` runs bench/fast_turns.py on each of ``--compare-models``: eager vs regional vs full
compile, persona switch through the hot-swapped slot, a batch of 4 vs 4 one by one, and the first
vs later turns of a thread with 2 references (bench/gpu.sh: the same at full size on a GPU).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
_BENCH = Path(__file__).resolve().parent
# Run as a script, bench/ comes first on sys.path, where queue.py would shadow the stdlib's queue.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent))

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from engine.render.pipeline import (  # noqa: E402
    LoadedPipeline,
    encode_context,
    load_pipeline,
    render,
    resolve_device,
    resolve_dtype,
)
from engine.render.references import compose_context  # noqa: E402

#: FLUX.1 [dev] / Kontext [dev] transformer and VAE configs (public model cards / config.json).
# fmt: off
FULL_TRANSFORMER = {
    "patch_size": 1, "in_channels": 64, "num_layers": 19, "num_single_layers": 38, "attention_head_dim": 128,
    "num_attention_heads": 24, "joint_attention_dim": 4096, "pooled_projection_dim": 768, "guidance_embeds": True,
    "axes_dims_rope": (16, 56, 56),
}
FULL_VAE = {
    "in_channels": 3, "out_channels": 3, "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4, "block_out_channels": (128, 256, 512, 512), "layers_per_block": 2,
    "latent_channels": 16, "norm_num_groups": 32, "sample_size": 1024, "use_quant_conv": False,
    "use_post_quant_conv": False, "shift_factor": 0.1159, "scaling_factor": 0.3611,
}


#: one-layer stand-ins for the text encoders with the real output widths (CLIP 768, T5 4096)
FULL_CLIP_STANDIN = {
    "hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 1,
    "projection_dim": 768,
}
FULL_T5_STANDIN = {
    "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 1, "num_heads": 64, "feed_forward_proj": "gated-gelu",
}
# fmt: on


def build_full_random(device: torch.device, dtype: torch.dtype) -> LoadedPipeline:
    """Full-size transformer and VAE with random weights, initialised on ``device`` in ``dtype``."""
    from engine.render.tiny_kontext import build_random_pipeline

    pipe = build_random_pipeline(
        seed=None,
        transformer=FULL_TRANSFORMER,
        vae=FULL_VAE,
        clip=FULL_CLIP_STANDIN,
        t5=FULL_T5_STANDIN,
        max_sequence_length=512,
        device=device,
        dtype=dtype,
    )
    return LoadedPipeline(pipe, "full", device, dtype, 512, pipe.vae_scale_factor * 2, toy=False)


#: FLUX.2 klein 4B transformer (black-forest-labs/FLUX.2-klein-4B transformer/config.json)
FULL_KLEIN_TRANSFORMER = {
    "patch_size": 1,
    "in_channels": 128,
    "num_layers": 5,
    "num_single_layers": 20,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 7680,  # 3 stacked Qwen3-4B hidden states of 2560
    "axes_dims_rope": (32, 32, 32, 32),
    "guidance_embeds": False,
}
#: one-layer Qwen3-4B stand-in with the real width (2560) and 512 tokens
FULL_QWEN3_STANDIN = {
    "hidden_size": 2560,
    "intermediate_size": 9728,
    "num_hidden_layers": 1,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "max_position_embeddings": 1024,
    "tie_word_embeddings": True,
}


def build_full_klein_random(device: torch.device, dtype: torch.dtype) -> LoadedPipeline:
    """klein 4B transformer and the full FLUX.2 VAE with random weights, on ``device`` in ``dtype``."""
    from engine.render.families import KLEIN
    from engine.render.klein_pipeline import out_layers
    from engine.render.tiny_klein import build_random_klein_pipeline

    pipe = build_random_klein_pipeline(
        seed=None,
        transformer=FULL_KLEIN_TRANSFORMER,
        vae={},  # AutoencoderKLFlux2's defaults are FLUX.2's VAE
        qwen3=FULL_QWEN3_STANDIN,
        max_sequence_length=512,
        device=device,
        dtype=dtype,
    )
    return LoadedPipeline(
        pipe, "full-klein", device, dtype, 512, pipe.vae_scale_factor * 2, toy=False, family=KLEIN,
        text_encoder_out_layers=out_layers(pipe),
    )  # fmt: skip


def _products(count: int, side: int) -> list[Image.Image]:
    """``count`` product-like drawings (a coloured disc on white), ``side`` pixels square."""
    from PIL import ImageDraw

    images = []
    for i in range(count):
        image = Image.new("RGB", (side, side), (245, 245, 245))
        ImageDraw.Draw(image).ellipse(
            (side // 8, side // 8, side - side // 8, side - side // 8), fill=(60 * i, 90, 200)
        )
        images.append(image)
    return images


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_render(
    lp: LoadedPipeline, args: argparse.Namespace, seed: int, context: Image.Image | None, refs: list | None = None
) -> dict:
    """Render one image; wall time of the whole call (reference encoding included) and of each step."""
    marks: list[float] = []
    refs = refs or []

    def on_step(_i: int, _n: int) -> None:
        _sync(lp.device)
        marks.append(time.perf_counter())

    _sync(lp.device)
    start = time.perf_counter()
    with torch.inference_mode():
        given: Image.Image | torch.Tensor | None = context
        if refs and not lp.family.native_references:  # composed into the context, as engine.render.references does
            composite = compose_context(context, refs, args.width, args.height, lp.multiple_of)
            given = encode_context(lp, composite, *composite.size)
        image = render(
            lp,
            prompt=args.prompt,
            width=args.width,
            height=args.height,
            steps=args.steps,
            guidance=args.guidance,
            seed=seed,
            context=given,
            on_step=on_step,
            references=refs if lp.family.native_references else (),
        )
    _sync(lp.device)
    end = time.perf_counter()
    steps = [b - a for a, b in itertools.pairwise(marks)]
    return {"image_s": end - start, "step_s": steps, "size": image.size, "image": image}


def _summary(runs: list[dict]) -> dict:
    steps = [s for run in runs for s in run["step_s"]]
    return {
        "seconds_per_image": round(statistics.median(r["image_s"] for r in runs), 4),
        "seconds_per_step": round(statistics.median(steps), 5) if steps else None,
        "images": len(runs),
        "output_size": list(runs[0]["size"]),
    }


def _peak_memory(device: torch.device) -> dict:
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    out = {"peak_rss_mib": round(rss_kib / 1024, 1)}
    if device.type == "cuda":
        out["peak_gpu_allocated_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        out["peak_gpu_reserved_mib"] = round(torch.cuda.max_memory_reserved(device) / 2**20, 1)
    return out


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        default="tiny",
        help="tiny, tiny-klein, full, full-klein (random full-size weights), hub id or folder",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda ...; default cuda when available")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"])
    parser.add_argument("--width", type=int, default=None, help="default 64 for tiny, 1024 otherwise")
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="default 4 for tiny and klein, 28 for Kontext")
    parser.add_argument("--guidance", type=float, default=None, help="default 2.5 (Kontext), 1.0 (klein)")
    parser.add_argument("--images", type=int, default=3, help="measured images (after warm-up)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--edit", action="store_true", help="also time an edit of the first image")
    parser.add_argument("--references", type=int, default=0, help="product images in every render")
    parser.add_argument("--compare", action="store_true", help="--compare-models side by side, 1-3 references")
    parser.add_argument("--compare-models", default="tiny,tiny-klein")
    parser.add_argument(
        "--fast-turns", action="store_true", help="--compare-models side by side: compile modes, persona switch, "
        "batch of 4, first vs later turns (bench/fast_turns.py)"
    )  # fmt: skip
    parser.add_argument("--compile", default="none", choices=["none", "full", "regional"], help="torch.compile")
    parser.add_argument(
        "--attention", default=None, help="diffusers attention backend: native, _native_flash, flash, sage ..."
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--prompt", default="a photo of a woman holding a latte in a sunny cafe")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    return parser.parse_args(argv)


def _load(args: argparse.Namespace, device: torch.device) -> tuple[LoadedPipeline, float]:
    """The model of ``args`` with its defaults filled in; and the seconds loading took."""
    from engine.render.families import KLEIN, family_of
    from engine.specs import TINY_MODELS

    family = KLEIN if args.model == "full-klein" else family_of(args.model)
    defaults = family.default_params(toy=args.model in TINY_MODELS)  # full / full-klein: real-size defaults
    args.width = args.width or defaults.width
    args.height = args.height or defaults.height
    args.steps = args.steps or defaults.steps
    args.guidance = args.guidance if args.guidance is not None else defaults.guidance
    started = time.perf_counter()
    if args.model == "full":
        lp = build_full_random(device, resolve_dtype(args.dtype, device))
    elif args.model == "full-klein":
        lp = build_full_klein_random(device, resolve_dtype(args.dtype, device))
    else:
        lp = load_pipeline(args.model, device=str(device), dtype=args.dtype)
    _sync(device)
    if args.attention:
        lp.pipe.transformer.set_attention_backend(args.attention)
    if args.compile == "full":
        lp.pipe.transformer.compile(fullgraph=True)
    elif args.compile == "regional":
        lp.pipe.transformer.compile_repeated_blocks(fullgraph=True)
    return lp, time.perf_counter() - started


def _measure(lp: LoadedPipeline, args: argparse.Namespace, count: int, edit: bool) -> dict:
    """Warm-up, then ``args.images`` renders with ``count`` references (and as many edits)."""
    refs = _products(count, max(64, args.width))
    started = time.perf_counter()
    for i in range(args.warmup):
        _timed_render(lp, args, seed=10_000 + i, context=None, refs=refs)
    out: dict = {"warmup_s": round(time.perf_counter() - started, 3)}
    runs = [_timed_render(lp, args, seed=i, context=None, refs=refs) for i in range(args.images)]
    out["text_to_image"] = _summary(runs)
    if edit:
        context = runs[0]["image"]
        _timed_render(lp, args, seed=20_000, context=context, refs=refs)  # shapes differ from t2i: warm up again
        edits = [_timed_render(lp, args, seed=30_000 + i, context=context, refs=refs) for i in range(args.images)]
        out["edit"] = _summary(edits)
    return out


def _header(lp: LoadedPipeline, args: argparse.Namespace, device: torch.device, load_s: float) -> dict:
    return {
        "model": args.model,
        "family": lp.family.name,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "dtype": str(lp.dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "compile": args.compile,
        "attention": args.attention or "default",
        "width": args.width,
        "height": args.height,
        "steps": args.steps,
        "guidance": args.guidance,
        "transformer_parameters": sum(p.numel() for p in lp.pipe.transformer.parameters()),
        "load_s": round(load_s, 3),
    }


def compare(args: argparse.Namespace, device: torch.device) -> dict:
    """The models of ``--compare-models`` side by side: a post's image and an edit with 1-3 references."""
    rows = []
    for model in args.compare_models.split(","):
        run = argparse.Namespace(**{**vars(args), "model": model})
        lp, load_s = _load(run, device)
        header = _header(lp, run, device, load_s)
        for count in (1, 2, 3):
            figures = _measure(lp, run, count, edit=True)
            rows.append(
                {
                    **{k: header[k] for k in ("model", "family", "width", "height", "steps", "load_s")},
                    "references": count,
                    "generate_s": figures["text_to_image"]["seconds_per_image"],
                    "edit_s": figures["edit"]["seconds_per_image"],
                    "edit_step_s": figures["edit"]["seconds_per_step"],
                }
            )
        del lp
    return {"device": str(device), "threads": torch.get_num_threads(), "compare": rows}


def fast_turns(args: argparse.Namespace, device: torch.device) -> dict:
    """bench/fast_turns.py's figures for each model of ``--compare-models``, side by side."""
    from bench.fast_turns import measure

    rows = []
    for model in args.compare_models.split(","):
        run = argparse.Namespace(**{**vars(args), "model": model, "compile": "none"})
        lp, load_s = _load(run, device)
        header = _header(lp, run, device, load_s)
        keep = ("model", "family", "dtype", "attention", "width", "height", "steps", "transformer_parameters", "load_s")
        rows.append({**{k: header[k] for k in keep}, **measure(lp, run)})
        del lp
        torch._dynamo.reset()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {"device": str(device), "device_name": _header_device(device), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "fast_turns": rows}  # fmt: skip


def _header_device(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()


def main(argv: list[str] | None = None) -> dict:
    args = _parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if args.fast_turns:
        report = fast_turns(args, device)
    elif args.compare:
        report = compare(args, device)
    else:
        lp, load_s = _load(args, device)
        report = _header(lp, args, device, load_s)
        report["references"] = args.references
        report.update(_measure(lp, args, args.references, edit=args.edit))
    report["memory"] = _peak_memory(device)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
