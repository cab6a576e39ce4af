"""The video engine with the tiny Wan pipeline: a playable MP4 of the asked length, cancel at a step
boundary, the bitrate lowered to fit a size limit, and the identity gate on sampled frames (real
photos, the real dlib embedder)."""

from __future__ import annotations

import io
import shutil
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from engine.render.identity import NOTE_BELOW, NOTE_NO_FACE, NOTE_NO_REFERENCE, NOTE_OK
from engine.render.pipeline import RenderCancelled
from engine.specs import VideoParams, default_video_params, wan_frame_count
from engine.video.clip_job import frame_identity, gate_clip, make_clip, sampled_frames
from engine.video.clip_pipeline import load_video_pipeline
from engine.video.mp4 import encode_mp4, fit_mp4, probe_mp4
from storage.settings import DEFAULT_IDENTITY_THRESHOLDS
from tests.engine.conftest import INSIGHTFACE_IMAGES

THRESHOLD = DEFAULT_IDENTITY_THRESHOLDS["dlib"]
needs_ffprobe = pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe (Debian's ffmpeg) not installed")


@pytest.fixture(scope="module")
def lvp():  # -> engine.video.clip_pipeline.LoadedVideoPipeline
    """The tiny video pipeline, run on one torch thread: its many small 3-D convolutions are several
    times faster so on a busy 2-core host (as ENGINE_THREADS would set it for a worker)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_video_pipeline("tiny")
    torch.set_num_threads(threads)


def _source() -> Image.Image:
    """A 4:3 approved image with some structure (a gradient and a block)."""
    x = np.linspace(0, 255, 96, dtype=np.float32)
    pixels = np.stack([np.tile(x, (72, 1)), np.tile(x[::-1], (72, 1)), np.full((72, 96), 90.0)], axis=-1)
    pixels[20:50, 30:60] = (240, 220, 40)
    return Image.fromarray(pixels.astype(np.uint8))


@pytest.mark.parametrize(("frames", "generated"), [(1, 1), (24, 25), (25, 25), (26, 29), (40, 41), (120, 121)])
def test_wan_generates_the_smallest_4k_plus_1_frames_that_cover_the_clip(frames: int, generated: int) -> None:
    assert wan_frame_count(frames) == generated


def test_the_tiny_model_defaults_to_at_least_8_fps_and_real_weights_to_wan_native_24() -> None:
    tiny, real = default_video_params("tiny"), default_video_params("Wan-AI/Wan2.2-TI2V-5B-Diffusers")
    assert (tiny.fps, tiny.seconds, tiny.frames, tiny.generated_frames) == (8, 3, 24, 25)
    assert (real.fps, real.frames, real.generated_frames) == (24, 120, 121)
    with pytest.raises(ValueError):
        VideoParams(seconds=6)
    with pytest.raises(ValueError):
        VideoParams(fps=4)


@needs_ffprobe
@pytest.mark.parametrize("seconds", [3, 5])
def test_the_tiny_pipeline_makes_a_playable_clip_of_the_asked_length(lvp, seconds: int) -> None:
    params = default_video_params("tiny").model_copy(update={"seconds": seconds})
    events: list[tuple] = []
    clip = make_clip(lvp, _source(), "she lifts the cup", params, 11, on_progress=lambda *a: events.append(a))

    info = probe_mp4(clip.mp4)
    assert (info.codec, info.pix_fmt) == ("h264", "yuv420p")
    assert info.frames == clip.frames == seconds * 8
    assert info.duration == pytest.approx(seconds, abs=1e-3)
    assert info.fps == pytest.approx(8)
    assert (info.width, info.height) == (clip.width, clip.height) == (64, 64)  # 4:3 at 64² snapped to 32s
    poster = Image.open(io.BytesIO(clip.poster))
    assert poster.format == "PNG" and poster.size == (64, 64)
    # progress: every denoising step with the frame count, then the encode
    steps = [e for e in events if "step" in e[2]]
    assert [e[0] for e in steps] == [1, 2, 3, 4] and all(e[1] == 4 for e in steps)
    assert f"{seconds * 8} frames" in steps[0][2]
    assert events[-1][2] == f"encoding {seconds * 8} frames"
    assert clip.identity.note == NOTE_NO_REFERENCE and clip.tries == 1
    assert set(clip.timings) == {"video_render", "identity_gate", "mp4_encode"}


def test_the_same_seed_gives_the_same_frames_and_the_first_follows_the_source(lvp) -> None:
    from engine.video.clip_pipeline import render_frames

    params = default_video_params("tiny")
    a = render_frames(lvp, _source(), "a", params, 5)
    b = render_frames(lvp, _source(), "a", params, 5)
    c = render_frames(lvp, _source(), "a", params, 6)
    assert a.frames.shape == (24, 64, 64, 3) and a.generated == 25
    assert np.array_equal(a.frames, b.frames)
    assert not np.array_equal(a.frames[1:], c.frames[1:])
    # expand_timesteps: frame 0 is the source's latent frame for every seed
    assert np.array_equal(a.frames[0], c.frames[0])


def test_cancel_stops_the_render_at_the_next_step_and_skips_the_decode(lvp) -> None:
    cancel = threading.Event()
    seen: list[int] = []

    def on_progress(step: int, total: int, note: str) -> None:
        seen.append(step)
        if step == 2:
            cancel.set()

    with pytest.raises(RenderCancelled):
        make_clip(lvp, _source(), "x", default_video_params("tiny"), 1, on_progress=on_progress, cancel=cancel)
    assert seen == [1, 2]  # no step 3, no "encoding"


def test_a_cancelled_flag_stops_before_the_first_step(lvp) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(RenderCancelled):
        make_clip(lvp, _source(), "x", default_video_params("tiny"), 1, cancel=cancel)


@needs_ffprobe
def test_fit_mp4_lowers_the_bitrate_until_the_clip_fits() -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(24, 128, 128, 3), dtype=np.uint8)  # noise: hard to compress
    full = encode_mp4(frames, 8)
    limit = len(full) // 3
    fitted = fit_mp4(frames, 8, limit, encoded=full)
    assert len(fitted) <= limit < len(full)
    info = probe_mp4(fitted)
    assert (info.codec, info.pix_fmt, info.frames) == ("h264", "yuv420p", 24)
    assert fit_mp4(frames, 8, len(full), encoded=full) is full  # fits already: unchanged
    with pytest.raises(ValueError, match="does not fit"):
        fit_mp4(frames, 8, 2_000, encoded=full)


# -- identity on sampled frames ------------------------------------------------------------------


@pytest.fixture(scope="module")
def faces(dlib_embedder) -> dict[str, np.ndarray]:
    """Frames of one size: Tom Hanks, another person (from the group photo), no face; and Hanks' embedding."""
    hanks = Image.open(INSIGHTFACE_IMAGES / "Tom_Hanks_54745.png").convert("RGB")
    group = Image.open(INSIGHTFACE_IMAGES / "t1.jpg").convert("RGB")
    left, top, right, bottom = dlib_embedder.faces(group)[0].box
    w, h = right - left, bottom - top
    other = group.crop((max(0, left - w), max(0, top - h), right + w, bottom + h))
    size = (256, 256)
    return {
        "hanks": np.asarray(hanks.resize(size, Image.Resampling.LANCZOS)),
        "other": np.asarray(other.resize(size, Image.Resampling.LANCZOS)),
        "blank": np.full((*size, 3), 128, dtype=np.uint8),
        "reference": dlib_embedder.embed(hanks),
    }


def _clip(faces, *names: str, length: int = 9) -> np.ndarray:
    """A ``length``-frame clip whose first, middle and last frames are ``names``."""
    first, middle, last = names
    frames = np.stack([faces[first]] * length)
    frames[(length - 1) // 2] = faces[middle]
    frames[-1] = faces[last]
    return frames


def test_sampled_frames_are_first_middle_and_last() -> None:
    assert sampled_frames(24) == [0, 11, 23]
    assert sampled_frames(2) == [0, 1]
    assert sampled_frames(1) == [0]


def test_a_persona_that_drifts_in_the_last_frame_scores_below_the_threshold(dlib_embedder, faces) -> None:
    steady = frame_identity(_clip(faces, "hanks", "hanks", "hanks"), dlib_embedder, faces["reference"], THRESHOLD)
    assert steady.note == NOTE_OK and steady.score is not None and steady.score >= THRESHOLD
    assert sorted(steady.frames) == [0, 4, 8]

    drifted = frame_identity(_clip(faces, "hanks", "hanks", "other"), dlib_embedder, faces["reference"], THRESHOLD)
    assert drifted.note == NOTE_BELOW
    assert drifted.score == drifted.frames[8] < THRESHOLD <= drifted.frames[0]  # the clip scores its worst frame

    lost = frame_identity(_clip(faces, "hanks", "blank", "hanks"), dlib_embedder, faces["reference"], THRESHOLD)
    assert lost.frames[4] is None and lost.note == NOTE_OK  # a frame without a face is not a drift
    none = frame_identity(_clip(faces, "blank", "blank", "blank"), dlib_embedder, faces["reference"], THRESHOLD)
    assert (none.score, none.note) == (None, NOTE_NO_FACE)


def test_a_drifting_clip_is_rendered_again_once_with_a_new_seed(dlib_embedder, faces) -> None:
    renders = [_clip(faces, "hanks", "other", "other"), _clip(faces, "hanks", "hanks", "hanks")]
    seeds: list[int] = []

    def render(attempt: int) -> tuple[np.ndarray, int]:
        seeds.append(100 + attempt)
        return renders[attempt], 100 + attempt

    frames, seed, verdict, tries = gate_clip(render, dlib_embedder, faces["reference"], THRESHOLD, 2)
    assert tries == 2 and seeds == [100, 101] and seed == 101
    assert verdict.note == NOTE_OK and frames is renders[1]


def test_a_clip_that_drifts_twice_is_delivered_with_its_score(dlib_embedder, faces) -> None:
    renders = [_clip(faces, "hanks", "other", "other"), _clip(faces, "hanks", "hanks", "other")]
    calls: list[int] = []

    def render(attempt: int) -> tuple[np.ndarray, int]:
        calls.append(attempt)
        return renders[attempt], attempt

    frames, _, verdict, tries = gate_clip(render, dlib_embedder, faces["reference"], THRESHOLD, 2)
    assert calls == [0, 1] and tries == 2  # one retry, no more
    assert verdict.note == NOTE_BELOW and verdict.score is not None and verdict.score < THRESHOLD
    assert frames is renders[0] or frames is renders[1]
    rejected = renders[0] if frames is renders[1] else renders[1]
    other = frame_identity(rejected, dlib_embedder, faces["reference"], THRESHOLD)
    assert other.score is None or verdict.score >= other.score  # the better of the two


def test_make_clip_runs_the_gate_on_the_rendered_frames(lvp, dlib_embedder, faces) -> None:
    """Tiny frames show no face: with a reference the clip is rendered twice (a new seed), then delivered."""
    seen: list[tuple] = []
    clip = make_clip(
        lvp, _source(), "x", default_video_params("tiny"), 3,
        embedder=dlib_embedder, reference=faces["reference"], threshold=THRESHOLD,
        on_progress=lambda *a: seen.append(a),
    )  # fmt: skip
    assert clip.tries == 2 and clip.identity.note == NOTE_NO_FACE and clip.identity.score is None
    assert any("new seed" in e[2] for e in seen) and seen[-1][1] == 8  # total grew by one render's steps


@needs_ffprobe
def test_a_saved_wan_folder_loads_through_from_pretrained_and_makes_a_clip(lvp, tmp_path) -> None:
    """The production path: ENGINE_VIDEO_MODEL names a folder (WanImageToVideoPipeline.from_pretrained,
    the VAE loaded apart in float32); the tiny weights saved there read as a test-sized model."""
    from engine.specs import is_toy_model

    lvp.pipe.save_pretrained(tmp_path / "wan")
    loaded = load_video_pipeline(str(tmp_path / "wan"))
    assert type(loaded.pipe).__name__ == "WanImageToVideoPipeline" and loaded.pipe.config.expand_timesteps
    assert loaded.pipe.vae.dtype == torch.float32 and loaded.toy and loaded.multiple_of == 32
    assert is_toy_model(str(tmp_path / "wan")) and default_video_params(str(tmp_path / "wan")).fps == 8
    clip = make_clip(loaded, _source(), "x", default_video_params("tiny"), 3)
    assert probe_mp4(clip.mp4).frames == 24
