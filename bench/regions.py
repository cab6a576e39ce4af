"""Benchmark region edits: a masked edit (crop-and-stitch) vs a full edit, and SAM click latency.

    python bench/regions.py                          # tiny Kontext and klein at 1024², SAM-HQ vit-base (random)
    python bench/regions.py --size 512 --sam tiny    # quicker
    python bench/regions.py --models full-klein --device cuda   # klein 4B architecture, random weights (GPU)

Per engine family: the seconds of a full-frame edit (engine.render.pipeline.render with the image
as context) and of a region edit (engine.render.regions.inpaint.render_region) of a region covering
``--region`` of the image, both ``--size``² and ``--steps`` steps; their ratio; and a check that the
region edit kept every pixel outside the hard mask. SAM: the first click on an image (image
embedding + mask decoder) vs a further click (decoder only; the embedding cached), with SAM-HQ's
vit-base architecture and random weights (``--sam full``; ``full-sam``: plain SAM vit-base; nothing
downloaded) or the tiny model.
Prints JSON (``--out`` writes it too).
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
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]  # bench/queue.py shadows queue
sys.path.insert(0, str(_BENCH.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from engine.render.pipeline import LoadedPipeline, encode_prompt, load_pipeline, render  # noqa: E402
from engine.render.regions.inpaint import render_region  # noqa: E402
from engine.render.regions.masks import prepare_region  # noqa: E402
from engine.render.regions.segmentation import Point, Segmenter  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _image(size: int) -> Image.Image:
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    rgb = np.stack([np.add.outer(ramp, ramp) / 2, np.add.outer(ramp, 255 - ramp) / 2, np.full((size, size), 128)], -1)
    return Image.fromarray(rgb.astype(np.uint8))


def _load(name: str, device: str | None) -> LoadedPipeline:
    if name in ("full", "full-klein"):
        import importlib.util

        spec = importlib.util.spec_from_file_location("bench_engine", _BENCH / "engine.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = torch.bfloat16 if target.type == "cuda" else torch.float32
        build = module.build_full_klein_random if name == "full-klein" else module.build_full_random
        return build(target, dtype)
    return load_pipeline(name, device=device)


def family_figures(name: str, args: argparse.Namespace) -> dict:
    lp = _load(name, args.device)
    size, steps = args.size, args.steps
    guidance = 1.0 if lp.family == "klein" else 2.5
    image = _image(size)
    mask = np.zeros((size, size), dtype=bool)
    side = int(size * args.region**0.5)
    top = (size - side) // 2
    mask[top : top + side, top : top + side] = True
    region = prepare_region(mask)
    prompt = encode_prompt(lp, "make the top red linen")
    full, masked, outside_kept = [], [], True
    for repeat in range(args.warmup + args.repeats):
        _sync(lp.device)
        started = time.perf_counter()
        render(lp, prompt=prompt, width=size, height=size, steps=steps, guidance=guidance, seed=repeat, context=image)
        _sync(lp.device)
        middle = time.perf_counter()
        out = render_region(
            lp, prompt=prompt, image=image, region=region, steps=steps, guidance=guidance, seeds=[repeat],
            area=size * size,
        )[0]  # fmt: skip
        _sync(lp.device)
        ended = time.perf_counter()
        if repeat >= args.warmup:
            full.append(middle - started)
            masked.append(ended - middle)
        kept = np.asarray(out.image)[~region.hard] == np.asarray(image)[~region.hard]
        outside_kept = outside_kept and bool(kept.all())
    full_s, masked_s = statistics.median(full), statistics.median(masked)
    return {
        "family": lp.family.name,
        "size": size,
        "steps": steps,
        "region_share": round(float(region.coverage), 3),
        "crop": list(out.crop.size),
        "crop_render_size": list(out.render_size),
        "full_edit_s": round(full_s, 4),
        "masked_edit_s": round(masked_s, 4),
        "masked_over_full": round(masked_s / full_s, 3),
        "outside_mask_identical": outside_kept,
    }


def sam_figures(args: argparse.Namespace) -> dict:
    if args.sam == "tiny":
        segmenter = Segmenter("tiny", device=args.device)
    else:
        from transformers import SamHQConfig, SamHQModel

        from engine.render.regions.tiny_segmentation import build_tiny_owlv2

        torch.manual_seed(0)
        sam = SamHQModel(SamHQConfig()).eval()  # syscv-community/sam-hq-vit-base's architecture
        from transformers import SamHQProcessor
        from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

        detector, detector_processor = build_tiny_owlv2()
        segmenter = Segmenter.from_models(
            detector,
            detector_processor,
            sam,
            SamHQProcessor(image_processor=SamImageProcessorPil()),
            device=args.device,
        )
    segmenter.load()
    image = _image(args.size)
    first, further = [], []
    for n in range(args.clicks_images):
        key = f"bench-{n}"
        started = time.perf_counter()
        segmenter.mask_from_points(image, [Point(args.size / 2, args.size / 2)], key=key)
        first.append(time.perf_counter() - started)
        for k in range(args.clicks):
            started = time.perf_counter()
            points = [Point(args.size / 2, args.size / 2), Point(args.size / 4 + k, args.size / 4, positive=False)]
            segmenter.mask_from_points(image, points, key=key)
            further.append(time.perf_counter() - started)
    first_s, further_s = statistics.median(first), statistics.median(further)
    return {
        "sam": {"tiny": "tiny", "full": "sam-hq vit-base", "full-sam": "sam vit-base"}[args.sam]
        + ("" if args.sam == "tiny" else " (random weights)"),
        "image": args.size,
        "first_click_s": round(first_s, 4),
        "cached_click_s": round(further_s, 4),
        "cached_over_first": round(further_s / first_s, 4),
        "embeddings_computed": segmenter.stats["embeddings"],
    }


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models", default="tiny,tiny-klein", help="comma-separated: tiny, tiny-klein, full, full-klein"
    )
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--region", type=float, default=0.15, help="share of the image the region covers")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--sam", choices=["full", "full-sam", "tiny", "none"], default="full")
    parser.add_argument("--clicks", type=int, default=3, help="further clicks per image")
    parser.add_argument("--clicks-images", type=int, default=1)
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = _parse(argv)
    report: dict = {"load_average": [round(v, 2) for v in os.getloadavg()], "torch_threads": torch.get_num_threads()}
    with torch.inference_mode():  # as the engine runs jobs
        report["families"] = [family_figures(name.strip(), args) for name in args.models.split(",") if name.strip()]
        if args.sam != "none":
            report["sam"] = sam_figures(args)
    report["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
