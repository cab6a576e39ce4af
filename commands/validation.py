"""Input rules: prompt length and uploaded images. Bad input raises :class:`InputError` with a
message meant for the user; nothing is stored before these checks pass."""

from __future__ import annotations

import io
import warnings

from PIL import Image

MAX_TEXT_CHARS = 1000
MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000
ALLOWED_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


def _quoted(text: str) -> str:
    """User input inside a message, exactly as given (never capitalised or otherwise changed)."""
    return f"'{text}'"


class InputError(ValueError):
    """User input that is refused; ``str(exc)`` is the message shown to the user."""


def check_text(text: str, what: str = "prompt") -> str:
    text = text.strip()
    if not text:
        raise InputError(f"the {what} is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise InputError(f"the {what} has {len(text)} characters; at most {MAX_TEXT_CHARS} are allowed")
    if "\x00" in text:
        raise InputError(f"the {what} contains a NUL character")
    return text


def check_image(data: bytes, filename: str = "image") -> tuple[str, int, int]:
    """Validate an uploaded image; return (mime, width, height).

    Refuses files over 20 MB, formats other than PNG/JPEG/WebP, images over 40 megapixels
    (decompression bombs included: the size is read from the header before any pixel is
    decoded) and files that do not decode completely.
    """
    if len(data) > MAX_IMAGE_BYTES:
        raise InputError(f"{_quoted(filename)} is {len(data) / 1e6:.1f} MB; images may be at most 20 MB")
    if not data:
        raise InputError(f"{_quoted(filename)} is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                fmt = probe.format or ""
                width, height = probe.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"{_quoted(filename)} is too large in pixels (a decompression bomb?)") from None
    except Exception:
        raise InputError(f"{_quoted(filename)} is not a readable image (PNG, JPEG or WebP)") from None
    if fmt not in ALLOWED_FORMATS:
        raise InputError(f"{_quoted(filename)} is {fmt or 'an unknown format'}; send PNG, JPEG or WebP")
    if width * height > MAX_IMAGE_PIXELS:
        raise InputError(
            f"{_quoted(filename)} is {width}x{height} ({width * height / 1e6:.0f} MP); at most 40 megapixels"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                image.load()  # decode every pixel: truncated or corrupt data fails here
    except Exception:
        raise InputError(f"{_quoted(filename)} is corrupt or truncated") from None
    return ALLOWED_FORMATS[fmt], width, height
