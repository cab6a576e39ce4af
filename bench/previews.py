"""Benchmark live previews: what they cost per turn (engine.render.previews), as JSON.

    python bench/previews.py                       # both tiny families, 1024 x 1024, 28 steps, CPU
    python bench/previews.py --models tiny --size 512 --steps 8

For each family one turn renders through ``engine.render.pipeline.render_batch`` (the worker's code
path) with the preview hook on and every preview let through (interval 0: the three of 25/50/75 %),
and the hook's own time is measured around each call (projection, resize, JPEG, and the one copy of
the latents before a preview). ``share`` is that time over the turn's denoise + decode time.

With the tiny random-weight models a 1024² turn takes seconds on a CPU; with real weights every
step costs orders of magnitude more while a preview costs the same (it depends only on the latent
size), so the tiny figure is an upper bound of the real share.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]  # bench/queue.py shadows queue
sys.path.insert(0, str(_BENCH.parent))

import torch  # noqa: E402

from engine.render.pipeline import load_pipeline, render_batch  # noqa: E402
from engine.render.previews import Previewer, PreviewSchedule  # noqa: E402


def measure(model: str, size: int, steps: int) -> dict[str, Any]:
    """One turn of ``model`` at ``size``² with previews; the hook's seconds and the turn's."""
    lp = load_pipeline(model, device="cpu")
    frames: list[Any] = []
    previewer = Previewer("bench", lp.family, lp.pipe, frames.append, PreviewSchedule(0.0))
    hook = previewer.for_render(size, size, steps, lambda i: (i, steps))
    hook_seconds = 0.0

    def timed(step: int, latents: torch.Tensor) -> None:
        nonlocal hook_seconds
        started = time.perf_counter()
        hook(step, latents)
        hook_seconds += time.perf_counter() - started

    args = dict(prompt="a mug on a cafe table", width=size, height=size, steps=steps, guidance=2.5, seeds=[1])
    with torch.inference_mode():
        render_batch(lp, **{**args, "width": 64, "height": 64, "steps": 2})  # warm-up (first calls)
        out = render_batch(lp, **args, on_latents=timed)[0]
    turn = out.timings["denoise"] + out.timings["vae_decode"]
    return {
        "model": model,
        "family": lp.family.name,
        "size": [size, size],
        "steps": steps,
        "previews": len(frames),
        "preview_steps": [f.step for f in frames],
        "preview_px": [frames[0].width, frames[0].height] if frames else None,
        "jpeg_bytes": [len(f.jpeg) for f in frames],
        "preview_ms_each": round(1000 * previewer.seconds / max(1, len(frames)), 2),
        "hook_ms_per_turn": round(1000 * hook_seconds, 2),
        "turn_s": round(turn, 3),
        "share": round(hook_seconds / turn, 5),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,tiny-klein")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    report = {
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "python": platform.python_version(),
        "turns": [measure(model, args.size, args.steps) for model in args.models.split(",")],
    }
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text)
    print(text)
    return report


if __name__ == "__main__":
    main()
