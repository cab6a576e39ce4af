"""Fast turns (issue 15) on the tiny models of both families: the persona slot is an exact blend
and swaps without recompiling, batched variations equal sequential renders, references are
encoded once per thread, fused Q/K/V is lossless, and every job reports where its time went."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from engine.render.families import KONTEXT
from engine.render.loras import AdapterManager, LoraLibrary, write_tiny_library
from engine.render.persona_slot import PersonaSlot, merge_loras, read_lora
from engine.render.pipeline import LoadedPipeline, load_pipeline, render_batch, render_latents

FAMILIES = ("tiny", "tiny-klein")
KW = {"prompt": "a woman with a latte", "width": 64, "height": 64, "steps": 2, "guidance": 2.5}


def _library(root: Path, model: str) -> LoraLibrary:
    write_tiny_library(root, model=model)
    if model != "tiny":  # diffusers' FLUX.2 loader takes no `.alpha` keys in this format
        return LoraLibrary(root)
    # Kontext: one member with alphas (alpha 8 on rank 4: scale 2), as many FLUX.1 LoRA files carry them
    path = root / "sweet" / "sweet_face1.safetensors"
    tensors = load_file(str(path))
    for key in [k for k in tensors if k.endswith(".lora_A.weight")]:
        tensors[key.replace(".lora_A.weight", ".alpha")] = torch.tensor(8.0)
    save_file(tensors, str(path))
    return LoraLibrary(root)


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, tmp_path_factory) -> tuple[LoadedPipeline, LoraLibrary]:
    lp = load_pipeline(request.param, device="cpu")
    return lp, _library(tmp_path_factory.mktemp(request.param), request.param)


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def _render(lp: LoadedPipeline, seed: int = 3, **extra) -> tuple[np.ndarray, torch.Tensor | None]:
    with torch.inference_mode():
        out = render_latents(lp, seed=seed, **{**KW, **extra})
    return _pixels(out.image), out.latents


def _clear_adapters(lp: LoadedPipeline) -> None:
    names = sorted({n for names in lp.pipe.get_list_adapters().values() for n in names})
    if names:
        lp.pipe.delete_adapters(names)


def test_read_lora_applies_alpha_over_rank(family) -> None:
    lp, library = family
    factors = read_lora(type(lp.pipe), library.path("sweet/sweet_face1"))
    assert {scale for _, _, scale in factors.values()} == ({2.0} if lp.family is KONTEXT else {1.0})
    plain = read_lora(type(lp.pipe), library.path("sweet/sweet_face2"))
    assert {scale for _, _, scale in plain.values()} == {1.0}
    with pytest.raises(ValueError, match="no LoRA layers"):
        read_lora(type(lp.pipe), {"transformer.x.weight": torch.zeros(2, 2)})


def test_merged_persona_lora_equals_the_set_adapters_blend(family) -> None:
    """Stacked A, weight·scale-scaled stacked B: the same image as peft's weighted blend."""
    lp, library = family
    mix = [("sweet/sweet_face1", 0.5), ("sweet/sweet_face2", 0.3), ("sweet/sweet_face3", 0.2)]
    _clear_adapters(lp)
    blend = AdapterManager(lp.pipe, library)
    blend.apply(mix)
    blended, blended_latents = _render(lp)
    _clear_adapters(lp)
    base, _ = _render(lp)

    merged = merge_loras([(read_lora(type(lp.pipe), library.path(n)), w) for n, w in mix])
    rank = next(v.shape[0] for k, v in merged.items() if k.endswith("lora_A.weight"))
    assert rank == 12  # three rank-4 members stacked
    slot = PersonaSlot(lp.pipe, layout=[library.path(n) for n in library.names("sweet")])
    slot.apply_mix(mix, library.path)
    assert lp.pipe.get_list_adapters()["transformer"] == ["persona"]
    merged_pixels, merged_latents = _render(lp)
    assert np.abs(merged_pixels - blended).max() <= 1  # uint8 images: at most one level of rounding
    assert np.abs(merged_pixels - base).max() > 10  # and the persona really changes the image
    if blended_latents is not None:  # Kontext keeps its final latents: compare them in fp32
        torch.testing.assert_close(merged_latents, blended_latents, atol=1e-5, rtol=1e-4)
    slot.apply_mix([], library.path)  # no persona: a zero LoRA in the slot, the base model's image
    assert np.array_equal(_render(lp)[0], base)
    _clear_adapters(lp)


def test_switching_among_five_personas_compiles_once(tmp_path: Path) -> None:
    """Regional compile (a counting backend on CPU) + hot swaps: no recompile after the first render."""
    from torch._dynamo.testing import CompileCounter

    from engine.render.speedups import apply_speedups

    torch._dynamo.reset()
    lp = load_pipeline("tiny", device="cpu")
    library = _library(tmp_path / "loras", "tiny")
    files = [library.path(n) for a in library.archetypes() for n in library.names(a)]
    slot = PersonaSlot(lp.pipe, layout=files)
    manager = AdapterManager(lp.pipe, library, slot=slot)
    manager.apply([])
    counter = CompileCounter()
    apply_speedups(lp, compile="regional", backend=counter)
    personas = [library.draw_mix(archetype, seed) for archetype in ("sweet", "boss", "elegant") for seed in (1, 2)][:5]
    manager.apply(personas[0])
    first, _ = _render(lp)
    compiled = counter.frame_count
    assert compiled >= 1  # the repeated blocks went through torch.compile
    images = [first]
    with torch._dynamo.config.patch(error_on_recompile=True):
        for mix in [*personas[1:], personas[0]]:
            manager.apply(mix)
            images.append(_render(lp)[0])
    assert counter.frame_count == compiled and slot.rebuilds == 0 and slot.loads == 7  # zero LoRA + 6 personas
    assert all(np.abs(a - b).max() > 0 for a, b in itertools.pairwise(images[:5]))  # each swap took
    assert np.array_equal(images[5], first)  # back to the first persona: the very same image
    torch._dynamo.reset()


def test_a_lora_outside_the_slot_rebuilds_it(family, tmp_path: Path) -> None:
    """A trained persona LoRA of a higher rank than the slot's: loaded anyway (the slot is rebuilt)."""
    lp, library = family
    _clear_adapters(lp)
    slot = PersonaSlot(lp.pipe, target_rank=4)
    slot.load(library.path("boss/boss_face1"), key="blob:one")
    face2 = load_file(library.path("boss/boss_face2"))
    wide = {k: torch.cat([v, v], dim=0 if "lora_A" in k else 1) for k, v in face2.items()}
    slot.load(wide, key="blob:two")  # rank 8 > 4
    assert slot.rebuilds == 1 and slot.key == "blob:two"
    slot.load(library.path("boss/boss_face3"), key="blob:three")  # fits again: a hot swap
    assert slot.rebuilds == 1 and slot.loads == 3
    _clear_adapters(lp)


def test_a_batch_renders_the_same_images_as_one_by_one(family) -> None:
    lp, _ = family
    _clear_adapters(lp)
    seeds = [5, 6, 7]
    context = Image.new("RGB", (64, 64), (180, 120, 90))
    with torch.inference_mode():
        batch = render_batch(lp, seeds=seeds, context=context, **KW)
        alone = [render_latents(lp, seed=s, context=context, **KW) for s in seeds]
    assert len(batch) == 3
    for together, single in zip(batch, alone, strict=True):
        assert np.abs(_pixels(together.image) - _pixels(single.image)).max() <= 1
        if single.latents is not None:
            torch.testing.assert_close(together.latents, single.latents, atol=1e-4, rtol=1e-4)
    assert np.abs(_pixels(batch[0].image) - _pixels(batch[1].image)).max() > 0  # own noise per image


def test_cached_klein_reference_latents_give_the_same_image(tmp_path: Path) -> None:
    lp = load_pipeline("tiny-klein", device="cpu")
    refs = [Image.new("RGB", (64, 64), (200, 30, 30)), Image.new("RGB", (96, 64), (30, 30, 200))]
    cache: dict = {}
    encodes = []

    def encode(index: int, pixels: torch.Tensor, own) -> torch.Tensor:
        if index not in cache:
            encodes.append(index)
            cache[index] = own(image=pixels, generator=None)
        return cache[index]

    with torch.inference_mode():
        plain = render_latents(lp, seed=1, references=refs, **KW).image
        first = render_latents(lp, seed=1, references=refs, encode_reference=encode, **KW).image
        again = render_latents(lp, seed=1, references=refs, encode_reference=encode, **KW).image
    assert encodes == [0, 1]  # the second render encoded nothing
    assert np.array_equal(_pixels(plain), _pixels(first)) and np.array_equal(_pixels(first), _pixels(again))
    assert not hasattr(lp.pipe, "__dict__") or "_encode_vae_image" not in vars(lp.pipe)  # the route is undone


def test_fused_qkv_is_lossless_and_refused_with_a_persona_lora(family) -> None:
    from engine.render.speedups import apply_speedups, lora_on_qkv

    shared, library = family
    lp = load_pipeline(shared.model, device="cpu")  # its own pipeline: fusing changes the transformer
    before, _ = _render(lp)
    with pytest.raises(ValueError, match="ENGINE_COMPILE='fast'"):
        apply_speedups(lp, compile="fast")
    with pytest.raises(ValueError, match="ENGINE_ATTENTION='nope'"):
        apply_speedups(lp, attention="nope")
    apply_speedups(lp, fuse_qkv=True, attention="native")
    after, _ = _render(lp)
    assert np.abs(after - before).max() <= 1
    other = load_pipeline(lp.model, device="cpu")
    other.pipe.load_lora_weights(str(library.path("puppy/puppy_face1")), adapter_name="x")
    assert lora_on_qkv(other.pipe.transformer)
    with pytest.raises(ValueError, match="ENGINE_FUSE_QKV would bypass"):
        apply_speedups(other, fuse_qkv=True)


def test_bad_engine_settings_are_refused() -> None:
    from storage.settings import SettingsError, load_settings

    assert load_settings(engine_compile="regional", engine_max_batch=2).engine_compile == "regional"
    with pytest.raises(SettingsError, match="ENGINE_COMPILE"):
        load_settings(engine_compile="turbo")
    with pytest.raises(SettingsError, match="ENGINE_MAX_BATCH"):
        load_settings(engine_max_batch=0)
