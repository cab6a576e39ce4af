"""Kontext references: composed into the context image vs FLUX.1 Redux image tokens (tiny, CPU).

    python bench/kontext_references.py [--images 5]

Both on the tiny Kontext pipeline, an edit of a 64² image with 1-3 product images, 4 steps:

* compose: engine.render.references.compose_context (the current image with the products in a strip on
  its right) VAE-encoded as the context, as the engine does;
* redux: a tiny FluxPriorReduxPipeline built from configs (SigLIP vision tower + Redux projector,
  random weights) whose image tokens are appended to the T5 prompt embeddings, one set per product.

Reported per count: median seconds per edit, the extra tokens the transformer sees, and how much
the output moves when the products change (mean absolute pixel difference, same seed): a sign
that the references reach the model, not a quality figure (the weights are random).
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
from PIL import Image, ImageDraw  # noqa: E402

from engine.render.pipeline import PromptEmbeds, encode_context, encode_prompt, load_pipeline, render  # noqa: E402
from engine.render.references import compose_context  # noqa: E402

SIZE = 64


def tiny_redux():  # -> diffusers.FluxPriorReduxPipeline
    from diffusers import FluxPriorReduxPipeline
    from diffusers.pipelines.flux.modeling_flux import ReduxImageEncoder
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(0)
    vision = SiglipVisionModel(
        SiglipVisionConfig(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=64,
            patch_size=8,
        )
    ).eval()
    processor = SiglipImageProcessor(size={"height": 64, "width": 64})
    return FluxPriorReduxPipeline(
        image_encoder=vision, feature_extractor=processor, image_embedder=ReduxImageEncoder(32, 32).eval()
    )


def products(seed: int, count: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        image = Image.new("RGB", (96, 96), (245, 245, 245))
        color = tuple(int(c) for c in rng.integers(0, 255, 3))
        ImageDraw.Draw(image).ellipse((12, 12, 84, 84), fill=color)
        out.append(image)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=5)
    args = parser.parse_args(argv)
    lp = load_pipeline("tiny", device="cpu")
    redux = tiny_redux()
    base = PromptEmbeds(*encode_prompt(lp, "she holds the product up").__dict__.values())
    current = Image.new("RGB", (SIZE, SIZE), (120, 100, 90))

    def compose_edit(refs: list[Image.Image], seed: int) -> Image.Image:
        composite = compose_context(current, refs, SIZE, SIZE, lp.multiple_of)
        latents = encode_context(lp, composite, *composite.size)
        return render(lp, prompt=base, width=SIZE, height=SIZE, steps=4, guidance=2.5, seed=seed, context=latents)

    def redux_edit(refs: list[Image.Image], seed: int) -> Image.Image:
        tokens = [redux.image_embedder(redux.encode_image(ref, "cpu", 1)).image_embeds for ref in refs]
        embeds = PromptEmbeds(torch.cat([base.prompt_embeds, *tokens], dim=1), base.pooled_prompt_embeds)
        return render(lp, prompt=embeds, width=SIZE, height=SIZE, steps=4, guidance=2.5, seed=seed, context=current)

    rows = []
    with torch.inference_mode():
        for count in (1, 2, 3):
            for name, edit in (("compose", compose_edit), ("redux", redux_edit)):
                a, b = products(1, count), products(2, count)
                edit(a, 0)  # warm-up
                times = []
                for i in range(args.images):
                    started = time.perf_counter()
                    edit(a, i)
                    times.append(time.perf_counter() - started)
                moved = np.abs(np.asarray(edit(a, 7), np.int16) - np.asarray(edit(b, 7), np.int16)).mean()
                if name == "compose":
                    width, height = compose_context(current, a, SIZE, SIZE, lp.multiple_of).size
                    tokens = (width * height - SIZE * SIZE) // lp.multiple_of**2  # context tokens beyond the image
                else:
                    tokens = sum(t.shape[1] for t in [redux.encode_image(ref, "cpu", 1) for ref in a])
                row = {"method": name, "references": count, "seconds_per_edit": round(statistics.median(times), 4)}
                rows.append({**row, "extra_tokens": tokens, "pixels_moved": round(float(moved), 3)})
    report = {"model": "tiny", "size": SIZE, "steps": 4, "threads": torch.get_num_threads(), "rows": rows}
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
