"""Persona LoRA mixes: the library, drawing mixes, applying them, the adapter LRU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from engine.render.loras import TINY_ARCHETYPES, AdapterManager, LoraLibrary, draw_mix, write_tiny_library
from engine.render.pipeline import load_pipeline, render


@pytest.fixture
def own_lp():
    """A tiny pipeline of this test's own (0.1 s), so its adapters start empty."""
    return load_pipeline("tiny", device="cpu")


def _render(lp, seed: int = 3) -> np.ndarray:
    with torch.inference_mode():
        image = render(lp, prompt="portrait", width=64, height=64, steps=2, guidance=2.5, seed=seed)
    return np.asarray(image, dtype=np.int16)


def test_tiny_library_has_four_archetypes_of_four_faces(tmp_path: Path) -> None:
    written = write_tiny_library(tmp_path)
    library = LoraLibrary(tmp_path)
    assert library.archetypes() == sorted(TINY_ARCHETYPES)
    assert len(written) == 16
    assert library.names("boss") == [f"boss/boss_face{i}" for i in range(1, 5)]
    tensors = load_file(str(library.path("boss/boss_face1")))
    assert all(k.startswith("transformer.") and k.endswith((".lora_A.weight", ".lora_B.weight")) for k in tensors)


def test_draw_mix_is_deterministic_dirichlet_over_k_distinct_loras() -> None:
    names = [f"sweet/face{i}" for i in range(6)]
    mix = draw_mix(names, seed=42, k=3)
    assert mix == draw_mix(names, seed=42, k=3)
    assert mix != draw_mix(names, seed=43, k=3)
    assert len({name for name, _ in mix}) == 3 and all(name in names for name, _ in mix)
    assert sum(w for _, w in mix) == pytest.approx(1.0, abs=1e-5)
    assert all(w > 0 for _, w in mix)
    assert len(draw_mix(names[:2], seed=1, k=3)) == 2  # k is capped by the library size


def test_unknown_archetype_and_bad_names_are_clear_errors(engine) -> None:
    with pytest.raises(ValueError, match=r"unknown archetype 'pirate'; known archetypes: boss, elegant"):
        engine.draw_mix("pirate", seed=1)
    with pytest.raises(ValueError, match="bad LoRA name"):
        engine.library.path("../etc/passwd")
    with pytest.raises(FileNotFoundError, match="not found"):
        engine.library.path("sweet/nobody")


def test_a_lora_mix_changes_the_output(engine, lp) -> None:
    base = _render(lp)
    engine.adapters.apply(engine.draw_mix("sweet", seed=1))
    mixed = _render(lp)
    engine.adapters.apply(engine.draw_mix("boss", seed=1))
    other = _render(lp)
    engine.adapters.apply([])
    off_again = _render(lp)
    assert np.abs(mixed - base).mean() > 1.0
    assert np.abs(other - mixed).mean() > 1.0
    assert np.array_equal(off_again, base)


def test_set_adapters_weights_give_the_weighted_sum_of_deltas(engine, lp) -> None:
    mix = [("elegant/elegant_face1", 0.6), ("elegant/elegant_face2", 0.3), ("elegant/elegant_face3", 0.1)]
    engine.adapters.apply(mix)
    module = "transformer_blocks.0.attn.to_q"
    layer = lp.pipe.transformer.get_submodule(module)
    x = torch.randn(5, layer.in_features, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        delta = layer(x) - layer.base_layer(x)
    expected = torch.zeros_like(delta)
    for name, weight in mix:  # read straight from the files: the loader must keep them as they are
        tensors = load_file(str(engine.library.path(name)))
        a = tensors[f"transformer.{module}.lora_A.weight"]
        b = tensors[f"transformer.{module}.lora_B.weight"]
        expected += weight * (x @ a.T @ b.T)  # no alpha in the files: scale 1
    assert expected.abs().max() > 0.05
    torch.testing.assert_close(delta, expected, atol=1e-5, rtol=1e-4)


def test_switching_personas_does_not_reload_loaded_adapters(engine, own_lp) -> None:
    lp = own_lp
    manager = AdapterManager(lp.pipe, engine.library, capacity=8)
    first = [("puppy/puppy_face1", 0.5), ("puppy/puppy_face2", 0.5)]
    second = [("puppy/puppy_face2", 0.2), ("puppy/puppy_face3", 0.8)]
    manager.apply(first)
    assert manager.disk_loads == 2
    manager.apply(second)
    assert manager.disk_loads == 3  # only puppy_face3 was new
    image_second = _render(lp)
    manager.apply(first)
    manager.apply(second)
    assert manager.disk_loads == 3
    assert np.array_equal(_render(lp), image_second)  # same mix, same image after switching back
    assert lp.pipe.get_active_adapters() == ["puppy__puppy_face2", "puppy__puppy_face3"]


def test_adapter_cache_is_a_bounded_lru(engine, own_lp) -> None:
    lp = own_lp
    manager = AdapterManager(lp.pipe, engine.library, capacity=3)
    manager.apply([("sweet/sweet_face1", 1.0), ("sweet/sweet_face2", 0.5)])
    manager.apply([("sweet/sweet_face3", 1.0), ("sweet/sweet_face4", 0.5)])
    assert manager.loaded == ["sweet/sweet_face2", "sweet/sweet_face3", "sweet/sweet_face4"]
    assert "sweet__sweet_face1" not in lp.pipe.get_list_adapters()["transformer"]
    manager.apply([("sweet/sweet_face1", 1.0)])  # evicted, so read again
    assert manager.disk_loads == 5
    assert manager.loaded == ["sweet/sweet_face3", "sweet/sweet_face4", "sweet/sweet_face1"]
