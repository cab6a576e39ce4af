"""Fast turns through the Engine (issue 15): batched variations, references encoded once per
thread on both families, and the per-stage timings in the result and the metrics."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from engine.config import EngineConfig
from engine.metrics import REGISTRY
from engine.render.engine import Engine
from engine.specs import JobKind, JobSpec, PersonaSpec, ReferenceSpec
from storage.blobs import BlobStore

STAGES = {"text_encode", "reference_encode", "denoise", "vae_decode", "identity_gate", "png_encode", "storage"}


def _spec(engine: Engine, kind: JobKind, job_id: str, **fields) -> JobSpec:
    fields.setdefault("params", engine.default_params())
    fields.setdefault("persona", PersonaSpec(archetype="sweet", lora_mix=engine.draw_mix("sweet", 2)))
    spec = JobSpec(job_id=job_id, kind=kind, **fields)
    return JobSpec.model_validate_json(spec.model_dump_json())


def _pixels(engine: Engine, key: str) -> np.ndarray:
    return np.asarray(engine.blobs.open_image(key), dtype=np.int16)


def _stage_count(stage: str) -> float:
    return REGISTRY.get_sample_value("persona_studio_job_stage_seconds_count", {"stage": stage}) or 0.0


def test_a_posts_variations_render_as_one_batch_with_the_same_images(engine: Engine) -> None:
    spec = _spec(engine, JobKind.GENERATE, "batched", prompt="a cafe", count=4, seed=11)
    batches = engine.stats["batches"]
    renders = engine.stats["renders"]
    before = _stage_count("denoise")
    batched = engine.run(spec)
    assert engine.stats["batches"] - batches == 1  # images 2-4: one batch of 3
    assert engine.stats["renders"] - renders == 4
    engine.max_batch = 1
    try:
        alone = engine.run(spec.model_copy(update={"job_id": "one-by-one"}))
    finally:
        engine.max_batch = 4
    assert engine.stats["batches"] - batches == 1
    assert batched.seeds == alone.seeds
    for a, b in zip(batched.image_keys, alone.image_keys, strict=True):
        assert np.abs(_pixels(engine, a) - _pixels(engine, b)).max() <= 1
    # where the time went: every stage, in the result and in the stage histogram
    assert set(batched.timings) == STAGES
    assert all(v >= 0 for v in batched.timings.values()) and batched.timings["denoise"] > 0
    assert sum(batched.timings.values()) <= batched.seconds * 1.5  # stages are parts of the job (storers overlap)
    assert _stage_count("denoise") == before + 2


def test_kontext_reuses_a_threads_context_across_turns(engine: Engine) -> None:
    product = engine.blobs.put_image(Image.new("RGB", (48, 48), (10, 160, 40)))
    refs = [ReferenceSpec(role="product", key=product, name="cup")]
    post = engine.run(_spec(engine, JobKind.GENERATE, "k-post", prompt="a desk", thread_id=9101, seed=1))
    encodes = engine.stats["context_encodes"]
    first = engine.run(
        _spec(engine, JobKind.EDIT, "k-1", prompt="tilt it", thread_id=9101, context_keys=post.image_keys)
    )
    assert engine.stats["context_encodes"] == encodes  # the post's result latents were kept
    engine.run(_spec(engine, JobKind.EDIT, "k-2", prompt="tilt it", thread_id=9101, context_keys=first.image_keys))
    assert engine.stats["context_encodes"] == encodes
    # with a product the context is a composite (current image + product strip): encoded once per
    # current image, and reused when the same composite comes back (a regenerate)
    edit = _spec(engine, JobKind.EDIT, "k-3", prompt="add it", thread_id=9101, context_keys=first.image_keys)
    edit = edit.model_copy(update={"references": refs})
    engine.run(edit)
    assert engine.stats["context_encodes"] == encodes + 1
    engine.run(edit.model_copy(update={"job_id": "k-3-regen", "seed": 5}))
    assert engine.stats["context_encodes"] == encodes + 1


@pytest.fixture(scope="module")
def klein(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    root = tmp_path_factory.mktemp("klein-engine")
    eng = Engine(
        EngineConfig(model="tiny-klein", lora_dir=root / "loras", identity_threshold=0.55), BlobStore(root / "b")
    )
    eng.load()
    return eng


def test_klein_encodes_each_reference_once_per_thread(klein: Engine) -> None:
    product = klein.blobs.put_image(Image.new("RGB", (64, 64), (200, 20, 20)))
    scene = klein.blobs.put_image(Image.new("RGB", (64, 64), (20, 20, 200)))
    refs = [ReferenceSpec(role="product", key=product, name="mug"), ReferenceSpec(role="scene", key=scene)]
    post = klein.run(_spec(klein, JobKind.GENERATE, "kl-post", prompt="mug", thread_id=77, references=refs))
    assert klein.stats["reference_encodes"] == 2  # the product and the scene
    keys = post.image_keys
    for turn in range(3):
        before = klein.stats["reference_encodes"]
        edit = _spec(klein, JobKind.EDIT, f"kl-{turn}", prompt="closer", thread_id=77, context_keys=keys)
        edit = edit.model_copy(update={"references": refs[:1]})
        keys = klein.run(edit).image_keys
        # only the new current image is encoded; the product's latents come from the thread cache
        assert klein.stats["reference_encodes"] - before == 1
    assert klein.run(_spec(klein, JobKind.EDIT, "kl-t", prompt="x", thread_id=77, context_keys=keys)).timings
