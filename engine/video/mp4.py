"""MP4 files of a clip's frames: H.264 in yuv420p (what every phone, browser and chat app plays),
``+faststart`` for streaming, written through imageio-ffmpeg's bundled ffmpeg.

:func:`encode_mp4` encodes at a constant quality (x264 CRF); :func:`fit_mp4` gives the clip that
fits a byte limit (Discord's upload limit, WeCom's 10 MB video message): the same encoding when
it fits, otherwise again at an average bitrate sized for the limit, lowered until it fits.
:func:`probe_mp4` reads codec, pixel format, frame count and duration back with ffprobe (Debian's
ffmpeg package), for tests and operators.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from storage.blobs import encode_png

#: x264 constant rate factor of a clip encoded without a size limit (lower = better, 18-23 is good)
DEFAULT_CRF = 20
#: share of the byte limit an average bitrate aims at (the container and rate jitter take the rest)
_FIT_MARGIN = 0.85
_FIT_TRIES = 4
MP4_MIME = "video/mp4"


@dataclass(frozen=True)
class Mp4Info:
    """What ffprobe says of an MP4's first video stream."""

    codec: str
    pix_fmt: str
    width: int
    height: int
    frames: int
    duration: float
    fps: float
    bit_rate: int | None


def encode_mp4(frames: np.ndarray, fps: int, *, crf: int = DEFAULT_CRF, bitrate: int | None = None) -> bytes:
    """``frames`` (uint8, T x H x W x 3, even sides) as H.264/yuv420p MP4 bytes at ``fps``.

    Constant quality ``crf`` unless ``bitrate`` (bits/s) is given: then an average bitrate capped at
    that rate (``-maxrate``) with a one-second buffer."""
    import imageio_ffmpeg

    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 T x H x W x 3, not {frames.dtype} {frames.shape}")
    height, width = int(frames.shape[1]), int(frames.shape[2])
    if width % 2 or height % 2:
        raise ValueError(f"yuv420p needs even sides, not {width}x{height}")
    rate = ["-crf", str(crf)] if bitrate is None else ["-maxrate", str(bitrate), "-bufsize", str(bitrate)]
    with tempfile.TemporaryDirectory(prefix="clip-") as folder:
        path = Path(folder) / "clip.mp4"
        writer = imageio_ffmpeg.write_frames(
            str(path),
            (width, height),
            fps=fps,
            codec="libx264",
            pix_fmt_out="yuv420p",
            quality=None,
            bitrate=str(bitrate) if bitrate is not None else None,
            macro_block_size=2,
            ffmpeg_log_level="error",
            output_params=[*rate, "-preset", "medium", "-movflags", "+faststart"],
        )
        writer.send(None)
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
        return path.read_bytes()


def fit_mp4(frames: np.ndarray, fps: int, max_bytes: int, *, encoded: bytes | None = None) -> bytes:
    """An MP4 of ``frames`` no larger than ``max_bytes``: ``encoded`` (or the CRF encoding) when it
    fits, else re-encoded at an average bitrate of the limit over the clip's duration, lowered
    until it fits. ValueError when even a very low bitrate does not fit."""
    data = encoded if encoded is not None else encode_mp4(frames, fps)
    if len(data) <= max_bytes:
        return data
    seconds = len(frames) / fps
    bitrate = int(max_bytes * 8 * _FIT_MARGIN / seconds)
    for _ in range(_FIT_TRIES):
        if bitrate < 16_000:  # below this x264 cannot hold even a small clip together
            break
        data = encode_mp4(frames, fps, bitrate=bitrate)
        if len(data) <= max_bytes:
            return data
        bitrate = int(bitrate * max_bytes / len(data) * _FIT_MARGIN)
    raise ValueError(f"a {seconds:.1f} s clip does not fit in {max_bytes} bytes even at a low bitrate")


def poster_png(frames: np.ndarray) -> bytes:
    """The clip's poster: frame 0 (the approved image, animated from) as PNG bytes."""
    return encode_png(Image.fromarray(frames[0]), 6)


def probe_mp4(data: bytes | Path) -> Mp4Info:
    """Codec, pixel format, size, frame count (decoded, not the header's guess) and duration of an MP4."""
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        raise FileNotFoundError("ffprobe not found: install Debian's ffmpeg package (apt-get install ffmpeg)")
    with tempfile.TemporaryDirectory(prefix="probe-") as folder:
        path = Path(data) if isinstance(data, Path) else Path(folder) / "clip.mp4"
        if not isinstance(data, Path):
            path.write_bytes(data)
        out = subprocess.run(
            [ffprobe, "-v", "error", "-select_streams", "v:0", "-count_frames", "-show_streams", "-show_format",
             "-of", "json", str(path)],
            check=True, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    info = json.loads(out.stdout)
    stream, fmt = info["streams"][0], info["format"]
    num, den = (int(x) for x in stream["avg_frame_rate"].split("/"))
    return Mp4Info(
        codec=stream["codec_name"],
        pix_fmt=stream["pix_fmt"],
        width=int(stream["width"]),
        height=int(stream["height"]),
        frames=int(stream["nb_read_frames"]),
        duration=float(stream.get("duration") or fmt["duration"]),
        fps=num / den if den else 0.0,
        bit_rate=int(fmt["bit_rate"]) if fmt.get("bit_rate") else None,
    )
