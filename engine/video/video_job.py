"""The ``video`` job: a post's approved image animated into a clip, on the worker's engine.

The job runner (engine.jobs.runner) sends video jobs here with the process's Engine. The clip holds
the engine lock (:meth:`Engine.hold`) like any job, but lends it to waiting jobs between its
denoising steps (:meth:`Engine.yield_model`): an image turn queued behind a clip starts within one
step. The video pipeline (ENGINE_VIDEO_MODEL) is loaded beside the image pipeline on the first clip
and kept (the VAE decode of the finished latents is one call and is not interleaved).

The MP4, its poster (frame 0) and, for a clip over VIDEO_UPLOAD_MB, a lower-bitrate copy for chat
uploads are stored off the lock; :attr:`JobResult.video` names them with the clip's facts.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from engine.errors import JobCancelled
from engine.render.engine import Engine
from engine.render.pipeline import RenderCancelled
from engine.specs import JobResult, JobSpec, PersonaSpec
from engine.video.clip_job import Clip, make_clip
from engine.video.clip_pipeline import LoadedVideoPipeline, load_video_pipeline

#: the video pipeline of each engine, loaded by its first clip
_PIPELINES: weakref.WeakKeyDictionary[Engine, LoadedVideoPipeline] = weakref.WeakKeyDictionary()


def video_pipeline(engine: Engine) -> LoadedVideoPipeline:
    """The engine's video pipeline, loaded once (under the engine lock)."""
    with engine.hold():
        lvp = _PIPELINES.get(engine)
        if lvp is None:
            config = engine.config
            lvp = load_video_pipeline(
                config.video_model, device=config.device, dtype=config.dtype, cpu_offload=config.video_cpu_offload
            )
            _PIPELINES[engine] = lvp
        return lvp


def persona_reference(engine: Engine, persona: PersonaSpec) -> np.ndarray | None:
    """The persona's reference face embedding for the engine's embedder (stored, or from its portrait)."""
    embedder = engine.embedder
    if embedder is None:
        return None
    if persona.embedding is not None and len(persona.embedding) == embedder.dim:
        return np.asarray(persona.embedding, dtype=np.float32)
    if persona.reference_key is None:
        return None
    return embedder.embed(engine.blobs.open_image(persona.reference_key))


def run_video(
    engine: Engine,
    spec: JobSpec,
    on_progress: Callable[..., None] | None = None,
    cancel: threading.Event | None = None,
    on_model_free: Callable[[], None] | None = None,
) -> JobResult:
    """Render, gate and encode the clip of ``spec`` (a VIDEO job); store it; return what was stored."""
    import torch

    if spec.video is None or not spec.context_keys:
        raise ValueError("a video job needs its video params and the image it animates (context_keys[0])")
    started = time.perf_counter()
    upload_bytes = int(engine.config.video_upload_mb * 1024 * 1024)
    try:
        with engine.hold():
            lvp = video_pipeline(engine)
            image = engine.blobs.open_image(spec.context_keys[0]).convert("RGB")
            reference = persona_reference(engine, spec.persona)
            with torch.inference_mode():
                clip = make_clip(
                    lvp,
                    image,
                    spec.prompt,
                    spec.video,
                    spec.seed,
                    embedder=engine.embedder,
                    reference=reference,
                    threshold=engine.identity_threshold,
                    on_progress=on_progress,
                    cancel=cancel,
                    between_steps=engine.yield_model,
                    upload_bytes=upload_bytes,
                )
    except RenderCancelled:
        raise JobCancelled(spec.job_id) from None
    if on_model_free is not None:
        on_model_free()
    return _stored(engine, spec, clip, time.perf_counter() - started)


def _stored(engine: Engine, spec: JobSpec, clip: Clip, seconds: float) -> JobResult:
    storing = time.perf_counter()
    blobs = engine.blobs
    video: dict[str, Any] = {
        "key": blobs.put(clip.mp4),
        "poster_key": blobs.put(clip.poster),
        "small_key": blobs.put(clip.small) if clip.small is not None else None,
        "bytes": len(clip.mp4),
        "small_bytes": len(clip.small) if clip.small is not None else None,
        "seconds": round(clip.seconds, 3),
        "fps": clip.fps,
        "frames": clip.frames,
        "width": clip.width,
        "height": clip.height,
        "source_key": spec.context_keys[0],
        "identity": {
            "score": clip.identity.score,
            "note": clip.identity.note,
            "frames": {str(index): score for index, score in clip.identity.frames.items()},
        },
    }
    timings = {**clip.timings, "storage": round(time.perf_counter() - storing, 4)}
    return JobResult(
        image_keys=[video["poster_key"]],
        seeds=[clip.seed],
        identity_scores=[clip.identity.score],
        identity_notes=[clip.identity.note],
        tries=[clip.tries],
        video=video,
        seconds=round(seconds + timings["storage"], 3),
        timings=timings,
    )
