"""Small helpers shared by the Discord adapter tests."""

from __future__ import annotations

import io
import random
from pathlib import Path

from PIL import Image

from commands.events import ImageOut


def png_bytes(width: int = 64, height: int = 64, *, noise: bool = False, seed: int = 0) -> bytes:
    if noise:
        rng = random.Random(seed)
        image = Image.frombytes("RGB", (width, height), bytes(rng.getrandbits(8) for _ in range(width * height * 3)))
    else:
        image = Image.new("RGB", (width, height), (200, 120, 80))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def image_out(folder: Path, name: str, data: bytes, caption: str = "") -> ImageOut:
    path = folder / name
    path.write_bytes(data)
    return ImageOut(blob_key="0" * 64, path=str(path), filename=name, caption=caption)
