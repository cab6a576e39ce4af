"""Masks of region edits: white = change, black = keep.

A mask comes from an attached image (:func:`mask_from_image_bytes`, any size, resized to the
image), from words or from clicks (engine.render.regions.segmentation). :func:`prepare_region`
checks it and turns it into a :class:`Region`: the *hard* mask (the mask dilated a little) and an
*alpha* feathered inward (1 on the mask itself and deep inside, falling to 0 at the hard mask's
edge, 0 outside; a thin mask is never faded away).
:func:`composite` puts a rendered image over the original with that alpha and takes the original
wherever the hard mask is black, so outside it the result is the original pixel for pixel.

Numpy and PIL only (no torch): the commands layer checks attached masks with this module.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter, UnidentifiedImageError

#: a mask covering at least this share of the image is a normal (whole-frame) edit
FULL_COVERAGE = 0.97
#: a mask image whose aspect differs from the image's by more than this factor is refused
MAX_ASPECT_FACTOR = 1.15
#: dilation and inward feather, as shares of the image's longer side (at least 1 and 2 px)
DILATE_SHARE = 0.006
FEATHER_SHARE = 0.012


class RegionError(ValueError):
    """A mask, words or clicks that give no usable region; ``str(exc)`` is meant for the user."""


class NothingFound(RegionError):
    """Words the detector found nowhere in the image."""

    def __init__(self, words: str, image_number: int | None = None) -> None:
        where = "in the image" if image_number is None else f"in image {image_number}"
        super().__init__(f"no '{words}' found {where}: try other words, or attach a mask")
        self.words = words


@dataclass(frozen=True)
class Region:
    """A checked mask at an image's size: ``hard`` (bool, H x W) and the feathered ``alpha``
    (float32 in [0, 1], 0 wherever ``hard`` is false); ``full``: it covers (almost) everything,
    so the edit is a normal whole-frame edit."""

    hard: np.ndarray
    alpha: np.ndarray
    coverage: float
    full: bool

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)``"""
        return self.hard.shape[1], self.hard.shape[0]

    def png(self) -> bytes:
        """The hard mask as a black and white PNG (what a turn stores)."""
        return mask_png(self.hard)


def mask_png(mask: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def open_mask_image(data: bytes) -> Image.Image:
    """The mask image in ``data``; :class:`RegionError` when it is no image."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise RegionError("the mask is not an image: attach a PNG or JPEG, white where to change") from None
    return image


def check_aspect(mask_size: tuple[int, int], image_size: tuple[int, int]) -> None:
    """:class:`RegionError` when a mask image's aspect is far from the image's."""
    mask_aspect = mask_size[0] / max(1, mask_size[1])
    image_aspect = image_size[0] / max(1, image_size[1])
    factor = max(mask_aspect / image_aspect, image_aspect / mask_aspect)
    if factor > MAX_ASPECT_FACTOR:
        raise RegionError(
            f"the mask is {mask_size[0]}x{mask_size[1]} but the image is {image_size[0]}x{image_size[1]}: "
            "their shapes differ too much; draw the mask over the image itself"
        )


def mask_from_image(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """A bool mask at ``size`` (width, height) from a mask image: white (bright) = change.
    Transparent pixels of an image with alpha count as black."""
    check_aspect(image.size, size)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(black, rgba)
    gray = image.convert("L")
    if gray.size != size:
        gray = gray.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(gray) >= 128


def mask_from_image_bytes(data: bytes, size: tuple[int, int]) -> np.ndarray:
    """:func:`mask_from_image` of the image in ``data``."""
    return mask_from_image(open_mask_image(data), size)


def _odd(value: float) -> int:
    return max(3, int(value) // 2 * 2 + 1)


def dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    """``mask`` grown by about ``pixels`` in every direction."""
    if pixels <= 0:
        return mask
    image = Image.fromarray(mask.astype(np.uint8) * 255, mode="L")
    return np.asarray(image.filter(ImageFilter.MaxFilter(_odd(2 * pixels + 1)))) >= 128


def feather_inward(mask: np.ndarray, pixels: int) -> np.ndarray:
    """An alpha that is 1 deeper than about ``pixels`` inside ``mask``, falls towards its edge and
    is exactly 0 outside it."""
    if pixels <= 0 or not mask.any():
        return mask.astype(np.float32)
    image = Image.fromarray(mask.astype(np.uint8) * 255, mode="L")
    core = image.filter(ImageFilter.MinFilter(_odd(pixels + 1)))
    soft = np.asarray(core.filter(ImageFilter.GaussianBlur(pixels / 2)), dtype=np.float32) / 255.0
    alpha = np.clip(soft * 2.0, 0.0, 1.0)  # the core's own edge (0.5 after the blur) is fully opaque
    return np.where(mask, alpha, 0.0).astype(np.float32)


def prepare_region(mask: np.ndarray, *, what: str = "the mask", image_number: int | None = None) -> Region:
    """Check ``mask`` (bool, H x W at the image's size) and make it a :class:`Region`: dilated a
    little, feathered inward. :class:`RegionError` when it covers nothing."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2 or mask.size == 0:
        raise RegionError(f"{what} is not a 2-D mask")
    if not mask.any():
        where = "" if image_number is None else f" of image {image_number}"
        raise RegionError(f"{what} covers nothing{where}: paint white where the image should change")
    height, width = mask.shape
    long = max(width, height)
    hard = dilate(mask, max(1, round(DILATE_SHARE * long)))
    coverage = float(hard.mean())
    full = coverage >= FULL_COVERAGE
    if full:
        hard = np.ones_like(hard)
        return Region(hard=hard, alpha=np.ones(hard.shape, np.float32), coverage=1.0, full=True)
    alpha = feather_inward(hard, max(2, round(FEATHER_SHARE * long)))
    alpha = np.maximum(alpha, mask.astype(np.float32))  # the mask itself is always repainted in full
    return Region(hard=hard, alpha=alpha, coverage=coverage, full=False)


def composite(original: Image.Image, rendered: Image.Image, region: Region) -> Image.Image:
    """``rendered`` over ``original`` with the region's alpha; wherever the hard mask is black the
    result is ``original``'s pixel, exactly. Both images at the region's size."""
    if original.size != region.size or rendered.size != region.size:
        raise ValueError(f"composite needs images of the region's size {region.size}")
    before = np.asarray(original.convert("RGB"))
    after = np.asarray(rendered.convert("RGB"))
    alpha = region.alpha[..., None]
    blended = np.rint(after.astype(np.float32) * alpha + before.astype(np.float32) * (1.0 - alpha))
    out = np.where(region.hard[..., None], np.clip(blended, 0, 255).astype(np.uint8), before)
    return Image.fromarray(out, mode="RGB")
