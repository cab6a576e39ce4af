"""The part of an image a region edit renders: the mask's box with a margin, and its render size.

Small regions still get enough resolution: the crop is rendered up to :data:`MAX_UPSCALE` times
larger (never above the render area of a whole-frame edit) and scaled back when it is stitched in.
Numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: margin around the mask's box, as a share of the box's longer side (context for the model)
MARGIN_SHARE = 0.25
#: the crop's sides are at least this share of the image's longer side (where the image allows)
MIN_CROP_SHARE = 0.3
#: a crop is rendered at most this many times larger (per side) than its pixels
MAX_UPSCALE = 2.0


@dataclass(frozen=True)
class Crop:
    """A box in image pixels (``right``/``bottom`` exclusive)."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.left, self.top, self.right, self.bottom

    @property
    def size(self) -> tuple[int, int]:
        return self.right - self.left, self.bottom - self.top


def _span(low: int, high: int, want: int, limit: int) -> tuple[int, int]:
    """``[low, high)`` widened symmetrically to ``want`` pixels, shifted to fit ``[0, limit)``."""
    want = min(max(want, high - low), limit)
    extra = want - (high - low)
    low -= extra // 2
    high = low + want
    if low < 0:
        low, high = 0, want
    if high > limit:
        low, high = limit - want, limit
    return low, high


def crop_around(mask: np.ndarray, *, margin_share: float = MARGIN_SHARE, min_share: float = MIN_CROP_SHARE) -> Crop:
    """The box of ``mask``'s true pixels with a margin, at least ``min_share`` of the image's
    longer side a side (as far as the image goes), inside the image."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("an empty mask has no crop")
    height, width = mask.shape
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    left, right = int(cols[0]), int(cols[-1]) + 1
    margin = round(margin_share * max(bottom - top, right - left))
    floor = round(min_share * max(width, height))
    left, right = _span(left, right, max(right - left + 2 * margin, floor), width)
    top, bottom = _span(top, bottom, max(bottom - top + 2 * margin, floor), height)
    return Crop(left, top, right, bottom)


def _snap(value: float, multiple: int) -> int:
    return max(multiple, round(value / multiple) * multiple)


def render_size(crop: Crop, area: int, multiple: int, max_upscale: float = MAX_UPSCALE) -> tuple[int, int]:
    """``(width, height)`` to render ``crop`` at: its aspect, at most ``area`` pixels, at most
    ``max_upscale`` times its own sides, sides multiples of ``multiple``."""
    width, height = crop.size
    scale = min(max_upscale, (area / (width * height)) ** 0.5)
    return _snap(width * scale, multiple), _snap(height * scale, multiple)
