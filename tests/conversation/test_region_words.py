"""Parsing region edits: region=<words> (区域=), the mask attachment, the mask checks."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from commands.events import Attachment
from commands.regions import check_mask, describe, mask_prefix, region_prefix, split_mask
from commands.validation import InputError


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_region_words_come_off_the_instruction() -> None:
    assert region_prefix("region=top make it red") == ("top", "make it red")
    assert region_prefix('region="red scarf" remove it') == ("red scarf", "remove it")
    assert region_prefix("区域=上衣 换成红色") == ("top", "换成红色")
    assert region_prefix("region=hat,scarf make them blue") == ("hat, scarf", "make them blue")
    assert region_prefix("make the region brighter") == (None, "make the region brighter")
    assert mask_prefix("mask: make it red") == (True, "make it red")
    assert mask_prefix("蒙版：换成红色") == (True, "换成红色")


def test_the_mask_attachment_is_taken_apart_from_references() -> None:
    mask = Attachment("m.png", b"x", role="mask")
    product = Attachment("p.png", b"y", role="product")
    assert split_mask([mask, product], False) == (mask, [product])
    plain = Attachment("a.png", b"z")
    assert split_mask([plain], True) == (plain, [])
    with pytest.raises(InputError, match="exactly one image"):
        split_mask([], True)
    with pytest.raises(InputError, match="one mask image"):
        split_mask([mask, mask], False)


def test_bad_masks_are_refused_with_their_reason() -> None:
    with pytest.raises(InputError):
        check_mask(Attachment("m.png", b"not an image"), [(64, 64)])
    black = Attachment("m.png", _png(Image.new("L", (32, 32), 0)))
    with pytest.raises(InputError, match="covers nothing"):
        check_mask(black, [(64, 64)])
    tall = Attachment("m.png", _png(Image.new("L", (10, 40), 255)))
    with pytest.raises(InputError, match="shapes differ"):
        check_mask(tall, [(64, 64)])
    half = Image.new("L", (32, 32), 0)
    half.paste(255, (0, 0, 16, 32))
    assert check_mask(Attachment("m.png", _png(half)), [(64, 64), (128, 128)]) is False
    assert check_mask(Attachment("m.png", _png(Image.new("L", (32, 32), 255))), [(64, 64)]) is True


def test_history_line_names_words_or_mask() -> None:
    assert describe({"region": {"source": "words", "words": "top"}}) == "region: top"
    assert describe({"region": {"source": "mask", "mask_key": "k"}}) == "region: mask"
    assert describe({"steps": 4}) is None
