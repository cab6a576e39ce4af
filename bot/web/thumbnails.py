"""WebP thumbnails of blob images, made once and kept on disk.

A thumbnail is named by its blob's key (content-addressed, so it never goes stale) and the size
it was made for. It is made the first time it is asked for, in a thread (Pillow), with one
maker per key at a time, and written atomically: a reader never sees half a file.
"""

from __future__ import annotations

import asyncio
import io
import os
import tempfile
from pathlib import Path

from cachetools import LRUCache
from PIL import Image, ImageOps

from storage.blobs import BlobStore

THUMB_SIZE = 384  # longest side, pixels: a sharp grid cell on a phone's 2x screen
WEBP_QUALITY = 80


class Thumbnails:
    def __init__(self, blobs: BlobStore, root: Path, size: int = THUMB_SIZE) -> None:
        self.blobs = blobs
        self.root = Path(root)
        self.size = size
        self._locks: LRUCache[str, asyncio.Lock] = LRUCache(maxsize=4096)
        self.made = 0  # thumbnails made by this process (tests and the benchmark read it)

    def path(self, key: str) -> Path:
        self.blobs.path(key)  # validates the key
        return self.root / str(self.size) / key[:2] / f"{key}.webp"

    async def get(self, key: str) -> Path:
        """The thumbnail's file, made now if it does not exist yet (BlobNotFound if the blob is gone)."""
        target = self.path(key)
        if target.exists():
            return target
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        async with lock:
            if not target.exists():
                await asyncio.to_thread(self._make, key, target)
                self.made += 1
        return target

    def _make(self, key: str, target: Path) -> None:
        image = self.blobs.open_image(key)
        image = ImageOps.exif_transpose(image)
        image.thumbnail((self.size, self.size), Image.Resampling.LANCZOS)
        if image.mode not in ("RGB", "RGBA"):
            image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
        buffer = io.BytesIO()
        image.save(buffer, format="WEBP", quality=WEBP_QUALITY, method=4)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".webp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(buffer.getvalue())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
