"""A klein pipeline folder written by diffusers' save_pretrained, and a LoRA library for its
transformer made with peft outside the project's code, load through the production path
(ENGINE_MODEL=<folder>, LORA_DIR/klein/<archetype>/<name>.safetensors)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.render.families import KLEIN
from engine.specs import JobKind, JobSpec, PersonaSpec, ReferenceSpec, is_toy_model, model_family, reference_limit


@pytest.fixture(scope="module")
def klein_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(pipeline folder, LORA_DIR) made with diffusers and peft only."""
    from diffusers import Flux2KleinPipeline, Flux2Transformer2DModel
    from peft import LoraConfig, get_peft_model_state_dict

    from engine.render.tiny_klein import build_tiny_klein_pipeline

    root = tmp_path_factory.mktemp("klein-folder")
    folder = root / "FLUX.2-klein-tiny"
    build_tiny_klein_pipeline(seed=7).save_pretrained(folder)
    lora_dir = root / "loras"
    for archetype in ("sweet", "boss"):
        for i in range(2):
            transformer = Flux2Transformer2DModel.from_pretrained(folder / "transformer")
            config = LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
            transformer.add_adapter(config)
            generator = torch.Generator().manual_seed(100 * i + len(archetype))
            with torch.no_grad():
                for name, param in transformer.named_parameters():
                    if "lora_" in name:  # peft starts B at zero: give every LoRA a visible effect
                        param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
            Flux2KleinPipeline.save_lora_weights(
                lora_dir / "klein" / archetype,
                transformer_lora_layers=get_peft_model_state_dict(transformer),
                weight_name=f"{archetype}_{i}.safetensors",
            )
    return folder, lora_dir


def test_the_folder_is_read_as_klein_without_loading(klein_folder) -> None:
    folder, _ = klein_folder
    assert model_family(str(folder)) == "klein"
    assert reference_limit(str(folder)) == 4
    assert is_toy_model(str(folder))


def test_the_saved_folder_and_peft_loras_run_through_the_engine(klein_folder, tmp_path: Path) -> None:
    from engine.config import EngineConfig
    from engine.render.engine import Engine
    from storage.blobs import BlobStore

    folder, lora_dir = klein_folder
    blobs = BlobStore(tmp_path / "blobs")
    engine = Engine(EngineConfig(model=str(folder), lora_dir=lora_dir, identity_threshold=0.55), blobs)
    assert engine.archetypes() == ["boss", "sweet"]
    engine.load()
    assert engine.pipeline.family is KLEIN and engine.pipeline.pipe.__class__.__name__ == "Flux2KleinPipeline"
    library_files = len(list(lora_dir.rglob("*.safetensors")))
    assert engine.adapters.disk_loads == library_files  # the persona slot read the library's layers at load
    params = engine.default_params()
    assert (params.steps, params.width) == (4, 64)
    mix = engine.draw_mix("sweet", seed=3, k=2)
    product = blobs.put_image(Image.new("RGB", (80, 80), (200, 20, 20)))
    spec = JobSpec(
        job_id="g",
        kind=JobKind.GENERATE,
        persona=PersonaSpec(archetype="sweet", lora_mix=mix),
        prompt="she holds the mug",
        seed=4,
        params=params,
        references=[ReferenceSpec(role="product", key=product, name="mug")],
    )
    with_loras = engine.run(spec)
    assert with_loras.lora_mix == mix and engine.adapters.disk_loads == library_files  # nothing read again
    plain = engine.run(spec.model_copy(update={"persona": PersonaSpec(archetype="sweet")}))

    def pixels(key: str) -> np.ndarray:
        return np.asarray(blobs.open_image(key), dtype=np.int16)

    assert engine.pipeline.pipe.get_list_adapters()["transformer"] == ["persona"]  # the one persona slot
    assert not np.array_equal(pixels(with_loras.image_keys[0]), pixels(plain.image_keys[0]))
