"""The tiny pipeline, the loader and render(): determinism, sizes, progress, cancel, save/load."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.render.pipeline import (
    RenderCancelled,
    encode_context,
    fit_size,
    load_pipeline,
    render,
)
from engine.render.tiny_kontext import build_tiny_pipeline


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def _render(lp, **kwargs) -> Image.Image:
    args = {"prompt": "a portrait photo", "width": 64, "height": 64, "steps": 3, "guidance": 2.5, "seed": 1}
    args.update(kwargs)
    with torch.inference_mode():
        return render(lp, **args)


def test_tiny_pipeline_builds_offline_small_and_in_eval_mode() -> None:
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    pipe = build_tiny_pipeline()
    # small enough to build in well under a second on a CPU (speed itself is measured in bench/, not here)
    parameters = sum(p.numel() for n in ("transformer", "vae", "text_encoder", "text_encoder_2")
                     for p in getattr(pipe, n).parameters())  # fmt: skip
    assert parameters < 1_000_000, parameters
    assert type(pipe).__name__ == "FluxKontextPipeline"
    assert pipe.transformer.config.guidance_embeds is True
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        assert not getattr(pipe, name).training, name
    assert pipe.vae_scale_factor == 8  # same 16-pixel output grid as FLUX.1


def test_same_seed_same_image_other_seed_other_image(lp) -> None:
    first = _render(lp, seed=7)
    again = _render(lp, seed=7)
    other = _render(lp, seed=8)
    assert np.array_equal(_pixels(first), _pixels(again))
    assert np.abs(_pixels(first) - _pixels(other)).mean() > 1.0


@pytest.mark.parametrize(("width", "height"), [(64, 64), (96, 64), (64, 112), (128, 48)])
def test_text_to_image_size_is_exactly_the_requested_size(lp, width: int, height: int) -> None:
    assert _render(lp, width=width, height=height, steps=1).size == (width, height)


@pytest.mark.parametrize(
    ("context_size", "expected"), [((300, 200), (80, 48)), ((180, 320), (48, 80)), ((90, 90), (64, 64))]
)
def test_edit_output_follows_the_context_aspect_ratio(lp, context_size, expected) -> None:
    context = Image.new("RGB", context_size, (200, 120, 80))
    width, height = fit_size(context.width / context.height, 64 * 64, lp.multiple_of)
    assert (width, height) == expected
    out = _render(lp, context=context, width=width, height=height, steps=1, prompt="make it blue")
    assert out.size == expected


def test_edit_depends_on_the_context_and_cached_latents_give_the_same_image(lp) -> None:
    red = Image.new("RGB", (64, 64), (220, 30, 30))
    blue = Image.new("RGB", (64, 64), (30, 30, 220))
    from_image = _render(lp, context=red, prompt="add a hat")
    with torch.inference_mode():
        latents = encode_context(lp, red, 64, 64)
    from_latents = _render(lp, context=latents, prompt="add a hat")
    other_context = _render(lp, context=blue, prompt="add a hat")
    assert np.array_equal(_pixels(from_image), _pixels(from_latents))
    assert not np.array_equal(_pixels(from_image), _pixels(other_context))


def test_progress_is_reported_after_every_step(lp) -> None:
    seen: list[tuple[int, int]] = []
    _render(lp, steps=5, on_step=lambda i, n: seen.append((i, n)))
    assert seen == [(i, 5) for i in range(1, 6)]


def test_cancel_stops_within_one_step(lp) -> None:
    steps_run: list[int] = []
    cancelled = False

    def on_step(i: int, _total: int) -> None:
        nonlocal cancelled
        steps_run.append(i)
        if i == 2:
            cancelled = True

    with pytest.raises(RenderCancelled):
        _render(lp, steps=10, on_step=on_step, cancel=lambda: cancelled)
    assert steps_run == [1, 2]


def test_cancel_before_start_runs_no_step(lp) -> None:
    steps_run: list[int] = []
    with pytest.raises(RenderCancelled):
        _render(lp, steps=4, on_step=lambda i, _n: steps_run.append(i), cancel=lambda: True)
    assert steps_run == []


def test_production_loader_loads_a_saved_tiny_pipeline_folder(lp, tmp_path: Path) -> None:
    folder = tmp_path / "tiny-kontext"
    build_tiny_pipeline().save_pretrained(folder)  # the same seed-0 weights as the session's pipeline
    loaded = load_pipeline(str(folder), device="cpu")
    assert loaded.pipe is not lp.pipe
    assert loaded.toy and loaded.max_sequence_length == lp.max_sequence_length
    assert loaded.dtype == torch.float32 and loaded.multiple_of == 16
    assert not loaded.pipe.transformer.training
    reference = _render(lp, seed=11, width=80, height=48)
    again = _render(loaded, seed=11, width=80, height=48)
    other_seed = _render(loaded, seed=12, width=80, height=48)
    assert again.size == (80, 48)
    # Same weights; float rounding in the loaded copy differs at the 1e-7 level (±1 grey level).
    assert np.abs(_pixels(reference) - _pixels(again)).max() <= 2
    assert np.abs(_pixels(again) - _pixels(other_seed)).mean() > 1.0


def test_loader_rejects_an_unknown_dtype() -> None:
    with pytest.raises(ValueError, match="unknown dtype"):
        load_pipeline("tiny", device="cpu", dtype="int8")
