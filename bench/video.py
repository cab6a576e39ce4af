"""Benchmark clips: frames per second of a whole clip (render, identity gate, MP4), as JSON.

    python bench/video.py                                   # tiny Wan on the CPU: 3 s at 8 fps, 64x64, 4 steps
    python bench/video.py --seconds 5 --threads 1 --repeat 3
    python bench/video.py --model /models/Wan2.2-TI2V-5B-Diffusers --device cuda   # 5 s 720p at 24 fps

Every clip runs through ``engine.video.clip_job.make_clip``, the worker's code path: Wan generates
the smallest 4k+1 frames covering ``seconds x fps`` and the extra 0-3 are trimmed. ``frames_per_s``
is delivered frames over the clip's wall time; the first clip (loading, first-call overhead) is
reported apart. Defaults come from the model (engine.video.clip_pipeline.default_video_params).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]  # bench/queue.py shadows queue
sys.path.insert(0, str(_BENCH.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from engine.specs import default_video_params  # noqa: E402
from engine.video.clip_job import make_clip  # noqa: E402
from engine.video.clip_pipeline import load_video_pipeline  # noqa: E402


def _source(width: int, height: int) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.float32)
    pixels = np.stack([np.tile(x, (height, 1)), np.tile(x[::-1], (height, 1)), np.full((height, width), 90.0)], -1)
    return Image.fromarray(pixels.astype(np.uint8))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--device", default=None)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--fps", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (CPU)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cpu-offload", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    lvp = load_video_pipeline(args.model, device=args.device, cpu_offload=args.cpu_offload)
    load_s = time.perf_counter() - started
    params = default_video_params(args.model, toy=lvp.toy)
    changes = {k: getattr(args, k) for k in ("seconds", "fps", "steps", "width", "height") if getattr(args, k)}
    params = params.model_copy(update=changes)
    source = _source(params.width, params.height)
    walls: list[float] = []
    first = None
    clip = None
    for i in range(args.repeat + 1):
        if lvp.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        clip = make_clip(lvp, source, "she lifts the cup and smiles at the camera", params, i)
        wall = time.perf_counter() - t0
        if i == 0:
            first = wall
        else:
            walls.append(wall)
    assert clip is not None
    wall = statistics.median(walls) if walls else first
    report = {
        "model": args.model,
        "device": str(lvp.device),
        "torch_threads": torch.get_num_threads(),
        "host": platform.node(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "seconds": params.seconds,
        "fps": params.fps,
        "frames": clip.frames,
        "generated_frames": params.generated_frames,
        "size": f"{clip.width}x{clip.height}",
        "steps": params.steps,
        "load_s": round(load_s, 3),
        "first_clip_s": round(first or 0.0, 3),
        "clip_s": round(wall or 0.0, 3),
        "frames_per_s": round(clip.frames / wall, 2) if wall else None,
        "timings_s": clip.timings,
        "mp4_bytes": len(clip.mp4),
    }
    if lvp.device.type == "cuda":
        report["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
