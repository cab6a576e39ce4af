"""One clip from an approved image: render, check the persona on sampled frames, encode.

The identity gate of the still images (engine.render.identity: the same embedder, similarity scale
and threshold) looks at the clip's first, middle and last frames; the clip's score is the lowest of
those that show a face (a persona that drifts is caught wherever it drifts). Below the threshold the
clip is rendered once more with a new seed (:func:`engine.render.job_render.derive_seed`), and the
better of the two is delivered with its score. Progress is reported per denoising step with the
frame count in the note; the runner turns it into an ETA. A set cancel flag stops the render at the
next step boundary.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from engine.render.identity import NOTE_BELOW, NOTE_NO_FACE, NOTE_NO_REFERENCE, NOTE_OK, Embedder, similarity
from engine.render.job_render import derive_seed
from engine.specs import VideoParams
from engine.video.clip_pipeline import LoadedVideoPipeline, render_frames
from engine.video.mp4 import encode_mp4, fit_mp4, poster_png

log = logging.getLogger(__name__)


@dataclass
class FrameIdentity:
    """The identity verdict of a clip: its score (lowest frame with a face), note and each sampled frame's."""

    score: float | None
    note: str
    #: sampled frame index -> similarity (None: no face in that frame)
    frames: dict[int, float | None] = field(default_factory=dict)

    def better_than(self, other: FrameIdentity) -> bool:
        if self.score is None:
            return False
        return other.score is None or self.score > other.score


@dataclass
class Clip:
    """A finished clip: MP4 bytes, its poster (frame 0 as PNG) and how it was made."""

    mp4: bytes
    poster: bytes
    frames: int
    fps: int
    width: int
    height: int
    seed: int
    tries: int
    identity: FrameIdentity
    #: seconds by stage: video_render, identity_gate, mp4_encode
    timings: dict[str, float] = field(default_factory=dict)
    #: a lower-bitrate copy no larger than the upload limit, when :attr:`mp4` is larger (else None)
    small: bytes | None = None

    @property
    def seconds(self) -> float:
        return self.frames / self.fps


def sampled_frames(count: int) -> list[int]:
    """Indexes of the frames the gate looks at: first, middle and last (fewer for very short clips)."""
    return sorted({0, (count - 1) // 2, count - 1})


def frame_identity(
    frames: Sequence[Image.Image] | np.ndarray,
    embedder: Embedder | None,
    reference: np.ndarray | None,
    threshold: float,
) -> FrameIdentity:
    """Score the sampled frames of a clip against ``reference`` (see the module doc)."""
    if embedder is None or reference is None:
        return FrameIdentity(None, NOTE_NO_REFERENCE)
    scores: dict[int, float | None] = {}
    for index in sampled_frames(len(frames)):
        frame = frames[index]
        image = frame if isinstance(frame, Image.Image) else Image.fromarray(np.asarray(frame))
        face = embedder.embed(image)
        scores[index] = None if face is None else similarity(reference, face, embedder.backend)
    found = [score for score in scores.values() if score is not None]
    if not found:
        return FrameIdentity(None, NOTE_NO_FACE, scores)
    score = min(found)
    return FrameIdentity(score, NOTE_OK if score >= threshold else NOTE_BELOW, scores)


def gate_clip(
    render: Callable[[int], tuple[np.ndarray, int]],
    embedder: Embedder | None,
    reference: np.ndarray | None,
    threshold: float,
    max_tries: int,
) -> tuple[np.ndarray, int, FrameIdentity, int]:
    """Render (``render(attempt) -> (frames, seed)``) until a clip passes, at most ``max_tries``
    times; returns the best clip's frames, seed, verdict and the renders made. Without a reference
    face there is nothing to compare: one render."""
    best: tuple[np.ndarray, int, FrameIdentity] | None = None
    tries = 0
    for attempt in range(max(1, max_tries)):
        frames, seed = render(attempt)
        tries += 1
        verdict = frame_identity(frames, embedder, reference, threshold)
        if best is None or verdict.better_than(best[2]):
            best = (frames, seed, verdict)
        if verdict.note in (NOTE_OK, NOTE_NO_REFERENCE):
            break
    assert best is not None
    return best[0], best[1], best[2], tries


class ClipProgress:
    """Denoising steps of every render of a clip as ``on_progress(step, total, note)``."""

    def __init__(self, params: VideoParams, callback: Callable[..., None] | None) -> None:
        self.params = params
        self.callback = callback
        self.total = params.steps
        self.done = 0

    def step(self, i: int, steps: int) -> None:
        if self.callback is not None:
            note = f"{self.params.frames} frames · step {i}/{steps}"
            self.callback(self.done + i, self.total, note)

    def render_finished(self) -> None:
        self.done += self.params.steps

    def retry(self) -> None:
        self.total += self.params.steps
        if self.callback is not None:
            self.callback(self.done, self.total, "persona drifted: rendering again with a new seed")


def make_clip(
    lvp: LoadedVideoPipeline,
    image: Image.Image,
    prompt: str,
    params: VideoParams,
    seed: int,
    *,
    embedder: Embedder | None = None,
    reference: np.ndarray | None = None,
    threshold: float = 0.5,
    on_progress: Callable[..., None] | None = None,
    cancel: threading.Event | None = None,
    between_steps: Callable[[], None] | None = None,
    upload_bytes: int | None = None,
) -> Clip:
    """Animate ``image`` into a clip of ``params.seconds`` at ``params.fps`` (see the module doc).
    A clip larger than ``upload_bytes`` also gets a lower-bitrate copy that fits (:attr:`Clip.small`).

    A cancelled render raises engine.render.pipeline.RenderCancelled."""
    progress = ClipProgress(params, on_progress)
    timings: dict[str, float] = {"video_render": 0.0}
    rendering = 0.0

    def render(attempt: int) -> tuple[np.ndarray, int]:
        nonlocal rendering
        if attempt:
            progress.retry()
        clip_seed = derive_seed(seed, 0, attempt)
        started = time.perf_counter()
        out = render_frames(
            lvp,
            image,
            prompt,
            params,
            clip_seed,
            on_step=progress.step,
            cancel=cancel.is_set if cancel is not None else None,
            between_steps=between_steps,
        )
        rendering += time.perf_counter() - started
        timings["video_render"] += out.timings["video_render"]
        progress.render_finished()
        return out.frames, clip_seed

    started = time.perf_counter()
    frames, used_seed, verdict, tries = gate_clip(render, embedder, reference, threshold, params.max_tries)
    timings["identity_gate"] = time.perf_counter() - started - rendering
    if on_progress is not None:
        on_progress(progress.total, progress.total, f"encoding {len(frames)} frames")
    encoding = time.perf_counter()
    mp4 = encode_mp4(frames, params.fps)
    poster = poster_png(frames)
    small = None
    if upload_bytes is not None and len(mp4) > upload_bytes:
        try:
            small = fit_mp4(frames, params.fps, upload_bytes, encoded=mp4)
        except ValueError as exc:  # delivered as it is: a front end with a lower limit says so
            log.warning("no upload-sized copy of the clip: %s", exc)
    timings["mp4_encode"] = time.perf_counter() - encoding
    return Clip(
        mp4=mp4,
        poster=poster,
        frames=len(frames),
        fps=params.fps,
        width=int(frames.shape[2]),
        height=int(frames.shape[1]),
        seed=used_seed,
        tries=tries,
        identity=FrameIdentity(verdict.score, verdict.note, verdict.frames),
        timings={stage: round(seconds, 4) for stage, seconds in timings.items()},
        small=small,
    )
