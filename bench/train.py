"""Benchmark persona LoRA training: seconds per step and peak memory, as JSON.

    python bench/train.py                                        # tiny model on the CPU, 64x64, rank 16
    python bench/train.py --model full --device cuda --size 1024 --steps 30  # Kontext [dev] shape, random
    python bench/train.py --model full-klein --device cuda --size 1024 --steps 30  # klein 4B shape, random

Every step is engine.training.loop's step (flow matching, peft LoRA in fp32 on the transformer, AdamW,
gradient checkpointing on CUDA). ``--model full`` is bench/engine.py's full-size Kontext
transformer with random weights, ``--model full-klein`` its FLUX.2 [klein] 4B one (timing only;
nothing is downloaded); ``tiny-klein`` is the tiny klein. The first ``--warmup`` steps are
excluded from the median.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from engine.render.pipeline import load_pipeline, resolve_device, resolve_dtype  # noqa: E402
from engine.training.families import train_family_of  # noqa: E402
from engine.training.loop import Sample, TrainConfig, train_lora  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="tiny", help="tiny, tiny-klein, full, full-klein (random full-size weights) or a folder"
    )
    parser.add_argument("--device", default=None)
    parser.add_argument("--size", type=int, default=64, help="training resolution (square)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--images", type=int, default=4)
    args = parser.parse_args()

    device = resolve_device(args.device)
    dtype = resolve_dtype("auto", device)
    if args.model == "full":
        from bench.engine import build_full_random

        lp = build_full_random(device, dtype)
    elif args.model == "full-klein":
        from bench.engine import build_full_klein_random

        lp = build_full_klein_random(device, dtype)
    else:
        lp = load_pipeline(args.model, device=str(device))
    rng = np.random.default_rng(0)
    samples = [
        Sample(
            Image.fromarray(rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)), f"pst1 person, photo {i}"
        )
        for i in range(args.images)
    ]
    times: list[float] = []
    last = [time.perf_counter()]

    def on_step(step: int, total: int, loss: float) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    config = TrainConfig(steps=args.steps, rank=args.rank, resolution=args.size, checkpoint_every=10**9)
    last[0] = time.perf_counter()
    outcome = train_lora(lp, train_family_of(lp), samples, config, on_step=on_step)
    timed = times[args.warmup :] or times
    result = {
        "model": args.model,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "dtype": str(dtype).removeprefix("torch."),
        "size": args.size,
        "rank": args.rank,
        "steps": args.steps,
        "s_per_step_median": round(statistics.median(timed), 4),
        "s_per_step_min": round(min(timed), 4),
        "projected_500_steps_min": round(statistics.median(timed) * 500 / 60, 2),
        "peak_gpu_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
        "loss_first": round(outcome.losses[0], 4),
        "loss_last": round(outcome.losses[-1], 4),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
