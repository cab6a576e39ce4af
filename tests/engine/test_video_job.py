"""The video job on the real tiny Engine: it stores the clip, its poster and an upload-sized copy,
and lends the engine lock between its steps, so an image job asking during a clip runs at the
next step boundary (not after the clip)."""

from __future__ import annotations

import threading

import pytest

from engine.jobs.dispatch import run_job
from engine.specs import JobKind, JobSpec, PersonaSpec, default_video_params
from engine.video.mp4 import probe_mp4

WAIT_S = 60.0


def _spec(engine, kind: JobKind, **fields) -> JobSpec:
    fields.setdefault("params", engine.default_params())
    spec = JobSpec(job_id=f"{kind}-{threading.get_ident()}-{len(fields)}", kind=kind, **fields)
    return JobSpec.model_validate_json(spec.model_dump_json())


@pytest.fixture(scope="module")
def source_key(engine) -> str:
    persona = PersonaSpec(archetype="sweet", seed=2)
    created = run_job(engine, _spec(engine, JobKind.CREATE_PERSONA, persona=persona, seed=2))
    assert created.reference_key is not None
    return created.reference_key


def test_a_video_job_stores_the_clip_its_poster_and_an_upload_sized_copy(engine, source_key, monkeypatch) -> None:
    import dataclasses

    monkeypatch.setattr(engine, "config", dataclasses.replace(engine.config, video_upload_mb=0.02))  # ~20 KB
    video = default_video_params("tiny")
    spec = _spec(
        engine, JobKind.VIDEO, persona=PersonaSpec(archetype="sweet"), prompt="she waves",
        context_keys=[source_key], seed=5, video=video,
    )  # fmt: skip
    result = run_job(engine, spec)
    clip = result.video
    assert clip is not None and clip["source_key"] == source_key and result.image_keys == [clip["poster_key"]]
    full, small = probe_mp4(engine.blobs.get(clip["key"])), probe_mp4(engine.blobs.get(clip["small_key"]))
    assert (full.codec, full.frames, small.codec, small.frames) == ("h264", 24, "h264", 24)
    assert clip["small_bytes"] <= 0.02 * 1024 * 1024 < clip["bytes"]
    assert engine.blobs.open_image(clip["poster_key"]).size == (clip["width"], clip["height"])
    assert result.identity_notes == ["reference has no face"] and result.tries == [1]


def test_an_image_job_runs_between_the_steps_of_a_clip(engine, source_key) -> None:
    video = default_video_params("tiny").model_copy(update={"steps": 12})
    sweet = PersonaSpec(archetype="sweet")
    clip_spec = _spec(engine, JobKind.VIDEO, persona=sweet, prompt="x", context_keys=[source_key], video=video)
    image_spec = _spec(engine, JobKind.GENERATE, persona=PersonaSpec(archetype="sweet"), prompt="a café")
    clip_step = {"now": 0}
    image_done_at: list[int] = []
    image_thread: list[threading.Thread] = []

    def image_job() -> None:  # where the clip is at each of the image's steps (they run under the lock)
        run_job(engine, image_spec, on_progress=lambda *_: image_done_at.append(clip_step["now"]))

    def on_progress(step: int, total: int, note: str | None = None) -> None:
        clip_step["now"] = step
        if step == 2 and not image_thread:  # an image turn arrives while the clip renders
            thread = threading.Thread(target=image_job)
            image_thread.append(thread)
            thread.start()
            while engine._lock.waiting == 0:  # it is queued for the model
                threading.Event().wait(0.001)

    result = run_job(engine, clip_spec, on_progress=on_progress)
    image_thread[0].join(WAIT_S)
    steps = engine.default_params().steps
    assert image_done_at == [2] * steps  # all its steps ran at the clip's next step boundary
    assert clip_step["now"] == 12 and result.video is not None and result.video["frames"] == 24


def test_a_video_only_engine_loads_no_image_pipeline(engine, source_key, tmp_path) -> None:
    """WORKER_QUEUES=video: the worker's engine loads the face embedder, and Wan on its first clip."""
    import dataclasses

    from engine.render.engine import Engine

    clips_only = Engine(dataclasses.replace(engine.config, load_images=False), engine.blobs)
    clips_only.load()
    assert clips_only.loaded and clips_only.embedder is not None and clips_only._lp is None
    spec = _spec(engine, JobKind.VIDEO, persona=PersonaSpec(archetype="sweet"), prompt="x",
                 context_keys=[source_key], video=default_video_params("tiny"))  # fmt: skip
    result = run_job(clips_only, spec)
    assert result.video is not None and result.video["frames"] == 24
    assert clips_only._lp is None  # still no image pipeline
