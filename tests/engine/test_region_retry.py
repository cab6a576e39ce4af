"""A region edit through the job runner and storage: the masks are recorded on the job and its turn
before the render, a retried attempt renders with exactly those masks, and words that find nothing
fail at once with the user's message (no retry, nothing stored on the turn)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from engine.jobs.progress import LocalBus
from engine.jobs.runner import JobRunner
from engine.render.engine import Engine
from engine.specs import JobKind, JobSpec, PersonaSpec, RegionSpec
from storage.models import JobStatus, TurnKind
from storage.repository import Store

pytestmark = pytest.mark.slow


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class _DiesOnce:
    """The real engine, whose first run dies at its first step (a worker killed mid-render)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.specs: list[JobSpec] = []

    def load(self) -> None:
        self.engine.load()

    def run(self, spec, on_progress=None, cancel=None, on_model_free=None, on_region_masks=None):  # type: ignore[no-untyped-def]
        self.specs.append(spec)
        if len(self.specs) == 1:

            def die(step: int, total: int) -> None:
                raise RuntimeError("worker killed")

            on_progress = die
        return self.engine.run(spec, on_progress=on_progress, cancel=cancel, on_region_masks=on_region_masks)


async def _region_job(store: Store, engine: Engine, region: RegionSpec, name: str) -> JobSpec:
    owner = await store.user("console", "ann")
    persona = await store.create_persona(owner.id, name, "sweet", [], seed=1)
    thread = await store.create_thread(
        platform="console", owner_id=owner.id, persona_id=persona.id, title="", prompt=""
    )
    rng = np.random.default_rng(2)
    key = engine.blobs.put(_png(Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))))
    spec = JobSpec(
        job_id=f"region-{name}", kind=JobKind.EDIT, persona=PersonaSpec(persona_id=persona.id, archetype="sweet"),
        thread_id=thread.id, prompt="make it red", context_keys=[key], params=engine.default_params(), region=region,
    )  # fmt: skip
    turn = {"thread_id": thread.id, "parent_id": None, "kind": TurnKind.EDIT, "params": {"region": {"words": "top"}}}
    await store.create_job(
        spec.job_id, spec.kind, spec.model_dump(mode="json"), user_id=owner.id, thread_id=thread.id,
        platform="console", turn=turn,
    )  # fmt: skip
    return spec


async def test_a_retry_renders_with_the_masks_recorded_before_the_first_attempt(store: Store, engine: Engine) -> None:
    engine.segmenter().threshold = 0.0
    spec = await _region_job(store, engine, RegionSpec(words="top"), "Retry")
    flaky = _DiesOnce(engine)
    runner = JobRunner(flaky, store, LocalBus())
    with pytest.raises(RuntimeError, match="worker killed"):
        await runner.execute(spec.model_dump(mode="json"), final_attempt=False)
    job = await store.get_job(spec.job_id)
    recorded = job.spec["region"]["mask_keys"]
    assert len(recorded) == 1 and engine.blobs.open_image(recorded[0]).size == (64, 64)
    assert (await store.turn_for_job(spec.job_id)).params["region"] == {"words": "top", "mask_keys": recorded}
    result = await runner.execute(spec.model_dump(mode="json"))  # the queue's payload has no masks
    assert flaky.specs[1].region.mask_keys == recorded  # taken from storage, not recomputed
    assert result is not None and (await store.get_job(spec.job_id)).status == JobStatus.DONE
    assert (await store.turn_for_job(spec.job_id)).image_keys == result.image_keys


async def test_words_found_nowhere_fail_at_once_with_the_message(store: Store, engine: Engine) -> None:
    spec = await _region_job(store, engine, RegionSpec(words="hat"), "Nothing")
    segmenter = engine.segmenter()
    segmenter.threshold, saved = 1.0, segmenter.threshold
    try:
        out = await JobRunner(engine, store, LocalBus()).execute(spec.model_dump(mode="json"), final_attempt=False)
    finally:
        segmenter.threshold = saved
    job = await store.get_job(spec.job_id)
    assert out is None and job.status == JobStatus.FAILED
    assert job.error.startswith("no 'hat' found in image 1")
    assert (await store.turn_for_job(spec.job_id)).image_keys == []
