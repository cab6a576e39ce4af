"""The engine families as objects, the EngineConfig built from settings, and the runner's choice
between rendering and training (nothing here loads a model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import EngineConfig
from engine.render.families import KLEIN, KONTEXT, family_of, render_family
from engine.specs import FAMILY_FACTS, JobKind, JobSpec, PersonaSpec, default_params, family_facts, reference_limit
from storage.blobs import BlobStore
from storage.settings import load_settings


def test_each_family_object_answers_what_differs() -> None:
    assert (family_of("tiny"), family_of("tiny-klein")) == (KONTEXT, KLEIN)
    assert render_family("klein") is KLEIN and family_of("some-org/not-in-the-cache") is KONTEXT
    assert KLEIN.native_references and not KONTEXT.native_references
    assert (KLEIN.max_references, KONTEXT.max_references) == (4, None)
    assert KLEIN.context_as_latents is False and KONTEXT.context_as_latents is True
    assert (KLEIN.pipeline_class, KONTEXT.pipeline_class) == ("Flux2KleinPipeline", "FluxKontextPipeline")
    # the render family carries the same facts the commands layer reads from engine.specs
    for name, facts in FAMILY_FACTS.items():
        family = render_family(name)
        assert (family.label, family.tiny_model, family.max_references) == (
            facts.label,
            facts.tiny_model,
            facts.max_references,
        )
        assert family.default_params(toy=False) == facts.default_params(toy=False)
    assert family_facts("tiny-klein").label == "FLUX.2 klein" and reference_limit("tiny-klein") == 4
    assert default_params("tiny-klein").guidance == 1.0 and default_params("tiny").guidance == 2.5
    with pytest.raises(ValueError, match="unknown engine family 'sdxl'"):
        render_family("sdxl")  # type: ignore[arg-type]


def test_lora_library_folder_per_family(tmp_path: Path) -> None:
    assert KLEIN.lora_root(tmp_path, "tiny-klein") == tmp_path / "klein"  # the tiny klein writes its own folder
    assert KLEIN.lora_root(tmp_path, "some/klein-folder") == tmp_path  # no klein/ folder: LORA_DIR itself
    assert KONTEXT.lora_root(tmp_path, "tiny") == tmp_path
    (tmp_path / "kontext").mkdir()
    assert KONTEXT.lora_root(tmp_path, "tiny") == tmp_path / "kontext"


def test_region_edits_are_an_extension_point_not_a_silent_no_op() -> None:
    with pytest.raises(NotImplementedError, match=r"region edits are not available on FLUX\.2 klein"):
        KLEIN.inpaint_pipeline(None)  # type: ignore[arg-type]
    assert (KONTEXT.latent_rgb.channels, KLEIN.latent_rgb.channels) == (16, 32)  # live previews: implemented


def test_engine_config_is_built_once_from_settings(tmp_path: Path) -> None:
    settings = load_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'db'}",
        engine_model="tiny-klein",
        lora_dir=tmp_path / "loras",
        engine_max_batch=2,
        engine_compile="regional",
        engine_train_model="",
        face_backend="dlib",
        identity_threshold=None,
    )
    config = EngineConfig.from_settings(settings)
    assert (config.model, config.lora_dir, config.max_batch, config.compile) == (
        "tiny-klein",
        tmp_path / "loras",
        2,
        "regional",
    )
    assert config.identity_threshold == settings.effective_identity_threshold
    assert config.threads == settings.effective_engine_threads and config.train_model is None

    from engine.render.engine import Engine

    engine = Engine.from_settings(settings, BlobStore(tmp_path / "blobs"))
    assert engine.config == config and engine.family is KLEIN and engine.max_batch == 2
    assert engine.library.root == tmp_path / "loras" / "klein"


def test_the_render_engine_leaves_training_to_the_job_runner(tmp_path: Path) -> None:
    from engine.render.engine import Engine

    engine = Engine(EngineConfig(model="tiny", lora_dir=tmp_path / "loras"), BlobStore(tmp_path / "blobs"))
    spec = JobSpec(job_id="t", kind=JobKind.TRAIN_PERSONA, persona=PersonaSpec(archetype="sweet"))
    with pytest.raises(ValueError, match=r"engine\.jobs\.runner routes those"):
        engine.run(spec)
    assert not engine.loaded and engine.stats == {}  # refused before anything loaded or ran
