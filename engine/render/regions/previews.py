"""Mask previews for the web studio: clicks on an image -> SAM's mask, computed in the server's
own process (a thread, never the event loop), with the image embedding cached per blob key so
every click after the first only runs SAM's prompt encoder and mask decoder.

Importing this module loads nothing: torch and the models load on the first preview.
"""

from __future__ import annotations

import asyncio
import io
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from engine.render.regions.masks import mask_png

#: the preview overlay's colour where the mask is white (RGBA)
OVERLAY_RGBA = (91, 75, 219, 140)


@dataclass(frozen=True)
class Preview:
    """A click mask: its PNG (white = change; what an edit submits) and the overlay to show."""

    mask: np.ndarray
    coverage: float

    def png(self) -> bytes:
        return mask_png(self.mask)

    def overlay_png(self) -> bytes:
        """The mask as a translucent overlay (transparent where it is black)."""
        rgba = np.zeros((*self.mask.shape, 4), dtype=np.uint8)
        rgba[self.mask] = OVERLAY_RGBA
        buffer = io.BytesIO()
        Image.fromarray(rgba, mode="RGBA").save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()


class MaskPreviews:
    """A Segmenter (ENGINE_SEG_MODEL) made on the first preview and used from worker threads."""

    def __init__(self, seg_model: str = "", device: str | None = None) -> None:
        self.seg_model = seg_model
        self.device = device
        self._segmenter: Any = None
        self._lock = threading.Lock()

    @property
    def segmenter(self) -> Any:
        with self._lock:
            if self._segmenter is None:
                from engine.render.regions.segmentation import Segmenter

                self._segmenter = Segmenter(self.seg_model, device=self.device)
            return self._segmenter

    def preview_now(self, image: Image.Image, key: str, points: list[tuple[float, float, bool]]) -> Preview:
        """SAM's mask for ``points`` (image pixels; positive or not) on ``image`` (blob ``key``)."""
        from engine.render.regions.segmentation import Point

        mask = self.segmenter.mask_from_points(image, [Point(x, y, positive) for x, y, positive in points], key=key)
        return Preview(mask=mask, coverage=float(mask.mean()))

    async def preview(self, image: Image.Image, key: str, points: list[tuple[float, float, bool]]) -> Preview:
        return await asyncio.to_thread(self.preview_now, image, key, points)
