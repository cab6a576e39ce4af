"""What a clip asks for: plain data that crosses the queue inside a video job spec.

Pure pydantic and no engine imports, so engine.specs may hold it in a :class:`~engine.specs.JobSpec`.
The model's defaults live in engine.video.clip_pipeline (:func:`~engine.video.clip_pipeline.default_video_params`).
"""

from __future__ import annotations

import math

from pydantic import BaseModel, Field

#: the lengths a user may ask for (seconds)
MIN_SECONDS = 3.0
MAX_SECONDS = 5.0
#: slowest frame rate a clip is delivered at, even with the tiny model
MIN_FPS = 8
#: Wan's VAE compresses time 4x: a generated clip has 4k+1 frames
WAN_TEMPORAL_FACTOR = 4


class VideoParams(BaseModel):
    """A clip's length, frame rate and render settings (defaults: the video model's)."""

    seconds: float = Field(default=MIN_SECONDS, ge=MIN_SECONDS, le=MAX_SECONDS)
    fps: int = Field(default=24, ge=MIN_FPS, le=30)
    steps: int = Field(default=30, ge=1, le=100)
    guidance: float = Field(default=5.0, ge=0.0, le=20.0)
    #: output area (width x height); the sides follow the source image's aspect ratio
    width: int = Field(default=1280, ge=16, le=1920)
    height: int = Field(default=704, ge=16, le=1920)
    #: renders the identity gate may make: the first, and one retry with a new seed
    max_tries: int = Field(default=2, ge=1, le=3)

    @property
    def frames(self) -> int:
        """Frames delivered: ``seconds x fps``, rounded."""
        return max(1, round(self.seconds * self.fps))

    @property
    def generated_frames(self) -> int:
        """Frames Wan generates: the smallest 4k+1 that is at least :attr:`frames` (then trimmed)."""
        return wan_frame_count(self.frames)


def wan_frame_count(frames: int) -> int:
    """The smallest ``4k + 1 >= frames`` (Wan's VAE turns 4k+1 frames into k+1 latent frames)."""
    k = max(0, math.ceil((frames - 1) / WAN_TEMPORAL_FACTOR))
    return WAN_TEMPORAL_FACTOR * k + 1
