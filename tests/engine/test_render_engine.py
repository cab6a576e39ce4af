"""The Engine on the tiny model: jobs as JSON, seeds, sizes, progress, cancel, caches, the gate."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.errors import JobCancelled
from engine.render.engine import Engine
from engine.render.identity import Face, similarity
from engine.render.job_render import derive_seed
from engine.specs import JobKind, JobResult, JobSpec, PersonaSpec
from storage.blobs import BlobStore
from storage.settings import load_settings

_counter = iter(range(1_000_000))


def _spec(engine: Engine, kind: JobKind, persona: PersonaSpec, **fields) -> JobSpec:
    """A spec that went through JSON, as the queue carries it."""
    fields.setdefault("params", engine.default_params())
    spec = JobSpec(job_id=f"job-{next(_counter)}", kind=kind, persona=persona, **fields)
    return JobSpec.model_validate_json(spec.model_dump_json())


@pytest.fixture(scope="module")
def persona(engine: Engine) -> PersonaSpec:
    """A persona created through the engine (the tiny model's portrait has no face)."""
    created = engine.run(_spec(engine, JobKind.CREATE_PERSONA, PersonaSpec(archetype="elegant", seed=4), seed=4))
    return PersonaSpec(
        persona_id=1,
        archetype="elegant",
        seed=4,
        lora_mix=created.lora_mix,
        reference_key=created.reference_key,
        embedding=created.embedding,
    )


def _image(engine: Engine, key: str) -> np.ndarray:
    return np.asarray(engine.blobs.open_image(key), dtype=np.int16)


def test_engine_loads_nothing_until_load(tmp_path: Path) -> None:
    settings = load_settings(lora_dir=tmp_path / "loras", engine_model="tiny")
    engine = Engine.from_settings(settings, BlobStore(tmp_path / "blobs"))
    assert not engine.loaded
    assert engine.identity_threshold == settings.effective_identity_threshold
    assert engine.default_params().width == 64
    assert engine.archetypes() == ["boss", "elegant", "puppy", "sweet"]  # tiny library written on demand
    assert not engine.loaded


def test_create_persona_draws_the_mix_and_stores_a_reference(engine: Engine, persona: PersonaSpec) -> None:
    assert persona.lora_mix == engine.draw_mix("elegant", seed=4)
    assert all(name.startswith("elegant/") for name, _ in persona.lora_mix)
    image = engine.blobs.open_image(persona.reference_key)
    assert image.size == (64, 64)
    assert persona.embedding is None  # random weights draw no face
    again = engine.run(_spec(engine, JobKind.CREATE_PERSONA, PersonaSpec(archetype="elegant", seed=4), seed=4))
    assert again.reference_key == persona.reference_key and again.image_keys == [again.reference_key]
    assert again.identity_notes == ["no face found"]
    assert again.tries == [engine.default_params().max_tries]  # it tried for a face


def test_generate_is_reproducible_from_its_seed(engine: Engine, persona: PersonaSpec) -> None:
    spec = _spec(engine, JobKind.GENERATE, persona, thread_id=10, prompt="latte at a cafe", count=3, seed=21)
    first = engine.run(spec)
    second = engine.run(spec)
    other = engine.run(spec.model_copy(update={"seed": 22}))
    assert len(first.image_keys) == 3 and len(set(first.image_keys)) == 3
    assert first.seeds == [21, derive_seed(21, 1, 0), derive_seed(21, 2, 0)]
    assert second.image_keys == first.image_keys  # content-addressed: same pixels, same key
    assert not set(other.image_keys) & set(first.image_keys)
    assert first.identity_notes == ["reference has no face"] * 3
    assert first.identity_scores == [None] * 3 and first.tries == [1, 1, 1]
    assert first.lora_mix == persona.lora_mix


def test_the_persona_mix_shapes_the_images(engine: Engine, persona: PersonaSpec) -> None:
    spec = _spec(engine, JobKind.GENERATE, persona, prompt="on the beach", seed=5)
    with_mix = engine.run(spec)
    other_mix = engine.run(spec.model_copy(update={"persona": persona.model_copy(update={"lora_mix": []})}))
    assert np.abs(_image(engine, with_mix.image_keys[0]) - _image(engine, other_mix.image_keys[0])).mean() > 1


def test_variations_are_kontext_edits_of_the_first_image(engine: Engine, persona: PersonaSpec) -> None:
    before = engine.stats["context_encodes"]
    result = engine.run(_spec(engine, JobKind.GENERATE, persona, prompt="in a park", count=3, seed=8))
    # the variations start from the first image's own final latents: no VAE encode at all
    assert engine.stats["context_encodes"] - before == 0
    sizes = {engine.blobs.info(k).width for k in result.image_keys}
    assert sizes == {64}


@pytest.mark.parametrize(("scene_size", "expected"), [((300, 200), (80, 48)), ((200, 360), (48, 80))])
def test_generate_from_a_scene_follows_its_aspect_ratio(engine, persona, scene_size, expected) -> None:
    scene = engine.blobs.put_image(Image.new("RGB", scene_size, (90, 140, 200)))
    result = engine.run(_spec(engine, JobKind.GENERATE, persona, prompt="here", count=2, context_keys=[scene]))
    for key in result.image_keys:
        info = engine.blobs.info(key)
        assert (info.width, info.height) == expected


def test_edit_replaces_only_the_targets_and_keeps_the_aspect_ratio(engine, persona) -> None:
    wide = engine.blobs.put_image(Image.new("RGB", (150, 100), (200, 100, 50)))
    tall = engine.blobs.put_image(Image.new("RGB", (90, 160), (50, 100, 200)))
    square = engine.blobs.put_image(Image.new("RGB", (70, 70), (10, 200, 10)))
    post = [wide, tall, square]
    result = engine.run(
        _spec(
            engine,
            JobKind.EDIT,
            persona,
            thread_id=11,
            prompt="hold the latte higher",
            context_keys=post,
            targets=[0, 1],
            seed=3,
        )
    )
    assert len(result.image_keys) == 3 and result.image_keys[2] == square
    assert result.image_keys[0] not in post and result.image_keys[1] not in post
    assert [engine.blobs.info(k).width / engine.blobs.info(k).height for k in result.image_keys[:2]] == [
        80 / 48,
        48 / 80,
    ]
    assert result.seeds == [derive_seed(3, 0, 0), derive_seed(3, 1, 0)]
    with pytest.raises(ValueError, match=r"targets \[5\] out of range"):
        engine.run(_spec(engine, JobKind.EDIT, persona, prompt="x", context_keys=post, targets=[5]))
    with pytest.raises(ValueError, match="context_keys"):
        engine.run(_spec(engine, JobKind.EDIT, persona, prompt="x"))


def test_regenerate_runs_the_same_kind_with_the_new_seed(engine, persona) -> None:
    base = engine.blobs.put_image(Image.new("RGB", (64, 64), (120, 60, 30)))
    edit = _spec(engine, JobKind.EDIT, persona, prompt="add sunglasses", context_keys=[base], seed=1)
    original = engine.run(edit)
    regen = engine.run(edit.model_copy(update={"kind": JobKind.REGENERATE, "of_kind": JobKind.EDIT, "seed": 2}))
    regen_again = engine.run(edit.model_copy(update={"kind": JobKind.REGENERATE, "of_kind": JobKind.EDIT, "seed": 2}))
    same_seed = engine.run(edit.model_copy(update={"kind": JobKind.REGENERATE, "of_kind": JobKind.EDIT}))
    assert regen.image_keys != original.image_keys
    assert regen_again.image_keys == regen.image_keys
    assert same_seed.image_keys == original.image_keys
    with pytest.raises(ValueError, match="of_kind"):
        engine.run(edit.model_copy(update={"kind": JobKind.REGENERATE, "of_kind": None}))


def test_progress_reports_every_step_of_every_image(engine, persona) -> None:
    seen: list[tuple[int, int]] = []
    params = engine.default_params().model_copy(update={"steps": 3})
    engine.run(_spec(engine, JobKind.GENERATE, persona, count=2, params=params), on_progress=lambda *a: seen.append(a))
    assert seen == [(i, 6) for i in range(1, 7)]


def test_cancel_stops_the_job_within_one_step(engine, persona) -> None:
    cancel = threading.Event()
    seen: list[int] = []

    def on_progress(step: int, _total: int) -> None:
        seen.append(step)
        if step == 3:
            cancel.set()

    params = engine.default_params().model_copy(update={"steps": 5})
    spec = _spec(engine, JobKind.GENERATE, persona, count=2, params=params)
    with pytest.raises(JobCancelled):
        engine.run(spec, on_progress=on_progress, cancel=cancel)
    assert seen == [1, 2, 3]
    # the engine is usable right after
    assert len(engine.run(spec).image_keys) == 2


def test_follow_up_edits_on_a_thread_reuse_its_cache(engine, persona) -> None:
    start = engine.blobs.put_image(Image.new("RGB", (64, 64), (30, 60, 90)))
    before_first = dict(engine.stats)
    first = engine.run(_spec(engine, JobKind.EDIT, persona, thread_id=77, prompt="smile", context_keys=[start]))
    assert engine.stats["context_encodes"] == before_first.get("context_encodes", 0) + 1  # the uploaded start
    before = dict(engine.stats)
    # the next turn edits the previous result: its decoded image and latents are cached under its
    # blob key, so neither the blob store nor the VAE encoder is touched
    second = engine.run(
        _spec(engine, JobKind.EDIT, persona, thread_id=77, prompt="smile", context_keys=first.image_keys, seed=1)
    )
    assert engine.stats["image_decodes"] == before["image_decodes"]
    assert engine.stats["prompt_encodes"] == before["prompt_encodes"]  # same instruction: embeddings reused
    assert engine.stats["context_encodes"] == before["context_encodes"]
    assert engine.stats["renders"] == before["renders"] + 1
    # regenerating that turn reuses the context latents too
    engine.run(
        _spec(engine, JobKind.EDIT, persona, thread_id=77, prompt="smile", context_keys=first.image_keys, seed=2)
    )
    assert engine.stats["context_encodes"] == before["context_encodes"]
    assert second.image_keys[0] != first.image_keys[0]
    # another thread editing the same stored image starts cold: read from the store, VAE-encoded
    engine.run(
        _spec(engine, JobKind.EDIT, persona, thread_id=78, prompt="smile", context_keys=first.image_keys, seed=1)
    )
    assert engine.stats["image_decodes"] == before["image_decodes"] + 1
    assert engine.stats["context_encodes"] == before["context_encodes"] + 1


def test_stored_results_are_faithful_pngs_and_the_lock_is_free_before_storing(engine, persona) -> None:
    """The result PNG holds exactly the rendered pixels; on_model_free runs once the renders are
    done, while the engine lock is free."""
    seen: list[bool] = []

    def on_model_free() -> None:
        acquired = engine._lock.acquire(blocking=False)  # another thread could start a job now
        if acquired:
            engine._lock.release()
        seen.append(acquired)

    spec = _spec(engine, JobKind.EDIT, persona, thread_id=79, prompt="wave", context_keys=[persona.reference_key])
    result = engine.run(spec, on_model_free=on_model_free)
    assert seen == [True]
    key = result.image_keys[0]
    assert not key.startswith("pending:") and engine.blobs.exists(key)
    cached = engine.thread_caches.for_thread(79).images[key]  # the cache moved to the real key
    stored = engine.blobs.open_image(key)
    assert stored.format == "PNG" and stored.mode == "RGB"
    assert np.array_equal(np.asarray(stored), np.asarray(cached))  # lossless
    assert not any(k.startswith("pending:") for k in engine.thread_caches.for_thread(79).images)


def test_switching_personas_between_jobs_reads_no_loaded_adapter_again(engine, persona) -> None:
    other = persona.model_copy(update={"lora_mix": engine.draw_mix("puppy", seed=9)})
    engine.run(_spec(engine, JobKind.GENERATE, persona))
    engine.run(_spec(engine, JobKind.GENERATE, other))
    loads = engine.adapters.disk_loads
    for p in (persona, other, persona, other):
        engine.run(_spec(engine, JobKind.GENERATE, p))
    assert engine.adapters.disk_loads == loads


class FakeEmbedder:
    """Sees a face in every image; its embedding is the image's mean colour (padded to 128).
    Remembers what it returned."""

    backend = "dlib"
    dim = 128

    def __init__(self) -> None:
        self.returned: list[np.ndarray] = []

    def faces(self, image: Image.Image) -> list[Face]:
        raise NotImplementedError

    def embed(self, image: Image.Image) -> np.ndarray:
        vec = np.zeros(self.dim, dtype=np.float32)
        vec[:3] = np.asarray(image, dtype=np.float32).mean(axis=(0, 1)) / 255.0
        self.returned.append(vec)
        return vec


def test_the_gate_retries_and_keeps_the_best_candidate(engine, persona, monkeypatch) -> None:
    fake = FakeEmbedder()
    monkeypatch.setattr(engine, "_embedder", fake)
    reference = [0.0] * 128  # far from every candidate's mean colour: nothing passes
    params = engine.default_params().model_copy(update={"max_tries": 3, "steps": 2})
    spec = _spec(engine, JobKind.GENERATE, persona.model_copy(update={"embedding": reference}), seed=6, params=params)
    seen: list[tuple[int, int]] = []
    result: JobResult = engine.run(spec, on_progress=lambda *a: seen.append(a))
    assert result.tries == [3] and result.identity_notes == ["below threshold"]
    assert seen == [(1, 2), (2, 2), (3, 4), (4, 4), (5, 6), (6, 6)]  # the total grows with each retry
    scores = [similarity(reference, vec, "dlib") for vec in fake.returned]
    assert len(scores) == 3 and len(set(scores)) == 3
    best = int(np.argmax(scores))
    assert result.seeds == [derive_seed(6, 0, best)]
    assert result.identity_scores[0] == pytest.approx(scores[best], abs=1e-4)
    assert np.allclose(fake.embed(engine.blobs.open_image(result.image_keys[0])), fake.returned[best])

    # a reference equal to the first candidate's embedding: it passes at once
    passing = persona.model_copy(update={"embedding": fake.returned[0].tolist()})
    result = engine.run(spec.model_copy(update={"persona": passing}))
    assert result.tries == [1] and result.identity_notes == ["ok"] and result.identity_scores == [1.0]
    assert result.seeds == [6]
