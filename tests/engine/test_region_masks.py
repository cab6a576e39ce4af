"""Region masks: checks with clear messages, dilation, inward feather, the exact composite, crops."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from engine.render.regions.crop import Crop, crop_around, render_size
from engine.render.regions.masks import (
    NothingFound,
    RegionError,
    composite,
    mask_from_image_bytes,
    prepare_region,
)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _box(size=(200, 150), box=(50, 40, 120, 100)) -> np.ndarray:
    mask = np.zeros((size[1], size[0]), dtype=bool)
    mask[box[1] : box[3], box[0] : box[2]] = True
    return mask


def test_mask_image_of_another_size_is_resized_white_means_change() -> None:
    small = Image.new("L", (100, 75), 0)
    small.paste(255, (25, 20, 60, 50))
    mask = mask_from_image_bytes(_png(small), (200, 150))
    assert mask.shape == (150, 200)
    assert mask[70, 80] and not mask[5, 5] and not mask[140, 190]
    assert abs(mask.mean() - (35 * 30) / (100 * 75)) < 0.02


def test_transparent_pixels_count_as_black() -> None:
    rgba = Image.new("RGBA", (40, 30), (255, 255, 255, 0))
    rgba.paste((255, 255, 255, 255), (10, 10, 20, 20))
    mask = mask_from_image_bytes(_png(rgba), (40, 30))
    assert mask.sum() == 100


def test_non_image_and_far_aspect_are_refused_with_a_message() -> None:
    with pytest.raises(RegionError, match="not an image"):
        mask_from_image_bytes(b"%PDF-1.4 not a picture", (200, 150))
    tall = Image.new("L", (50, 200), 255)
    with pytest.raises(RegionError, match="shapes differ"):
        mask_from_image_bytes(_png(tall), (200, 150))


def test_empty_mask_is_refused() -> None:
    with pytest.raises(RegionError, match="covers nothing of image 2"):
        prepare_region(np.zeros((30, 40), bool), image_number=2)


def test_nothing_found_names_the_words_and_the_image() -> None:
    assert str(NothingFound("hat", 2)).startswith("no 'hat' found in image 2")


def test_region_is_dilated_and_feathered_inside_the_hard_mask() -> None:
    mask = _box()
    region = prepare_region(mask)
    assert not region.full
    assert region.hard[mask].all() and region.hard.sum() > mask.sum()  # dilated
    assert (region.alpha[~region.hard] == 0).all()  # nothing outside the hard mask
    assert region.alpha[70, 85] == 1.0  # deep inside: opaque
    edge = region.alpha[region.hard & ~mask]
    assert edge.max() < 1.0  # the rim fades


def test_a_thin_mask_is_repainted_in_full() -> None:
    mask = np.zeros((100, 100), bool)
    mask[50, 10:90] = True  # one pixel thick: erosion alone would fade it away
    region = prepare_region(mask)
    assert (region.alpha[mask] == 1.0).all()


def test_almost_everything_is_a_normal_edit() -> None:
    mask = np.ones((100, 100), bool)
    mask[:1, :1] = False
    region = prepare_region(mask)
    assert region.full and region.hard.all() and (region.alpha == 1).all()


def test_composite_keeps_every_pixel_outside_the_hard_mask() -> None:
    rng = np.random.default_rng(1)
    before = Image.fromarray(rng.integers(0, 256, (150, 200, 3), dtype=np.uint8))
    after = Image.fromarray(rng.integers(0, 256, (150, 200, 3), dtype=np.uint8))
    region = prepare_region(_box())
    out = np.asarray(composite(before, after, region))
    assert (out[~region.hard] == np.asarray(before)[~region.hard]).all()
    assert (out[70, 85] == np.asarray(after)[70, 85]).all()
    assert region.png().startswith(b"\x89PNG")


def test_crop_has_a_margin_stays_inside_and_small_crops_render_larger() -> None:
    crop = crop_around(_box(size=(1000, 800), box=(900, 700, 990, 790)))
    assert crop.right <= 1000 and crop.bottom <= 800
    assert crop.left < 900 and crop.top < 700
    assert crop.size[0] >= 300  # at least 30% of the longer side
    width, height = render_size(Crop(0, 0, 300, 300), area=1024 * 1024, multiple=16)
    assert (width, height) == (608, 608)  # twice the crop's sides at most, snapped to 16
    big = render_size(Crop(0, 0, 2000, 1600), area=1024 * 1024, multiple=16)
    assert big[0] * big[1] <= 1024 * 1024 * 1.05
