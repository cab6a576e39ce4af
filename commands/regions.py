"""Region edits in the conversation: ``region=<words>`` (区域=), a ``mask`` image, and their checks.

* :func:`region_prefix`: ``region=top make it red`` -> ("top", "make it red"); quoted words
  (``region="red scarf"``) and comma lists (``region=hat,scarf``) too; a few Chinese garment and
  object words are put into English for the detector (``区域=上衣`` -> "top").
* :func:`split_mask`: the attachment that is the mask (role ``mask``: console ``@mask=path``, a
  leading ``mask:`` / ``蒙版:`` word, the role button) and the others.
* :func:`check_mask`: an attached mask is checked against every image it will apply to before
  anything is stored (not an image, a shape far from the image's, covering nothing); one that
  covers (almost) everything is allowed: a normal edit, and the reply says so.

The masks themselves are made on the worker (engine.render.regions); a turn records what the
region came from in ``Turn.params["region"]`` (``source``, ``words``, ``mask_key``, ``tryon``, and
``mask_keys`` once the worker has made them): /history shows it, /export writes the masks.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from commands.events import Attachment
from commands.validation import InputError, check_image
from engine.render.regions.masks import RegionError, mask_from_image, open_mask_image, prepare_region
from engine.specs import RegionSpec

MASK_ROLE = "mask"
_REGION_PREFIX = re.compile(r"^(?:region|区域)\s*[=＝]\s*(?:\"([^\"]+)\"|“([^”]+)”|(\S+))\s*", re.I)
_MASK_PREFIX = re.compile(r"^(?:mask|蒙版|遮罩)\s*[:：]\s*", re.I)
#: words the English-only detector would not understand, put into English
CHINESE_WORDS = {
    "上衣": "top", "衣服": "clothes", "外套": "jacket", "衬衫": "shirt", "裤子": "trousers", "裙子": "skirt",
    "连衣裙": "dress", "帽子": "hat", "鞋": "shoes", "鞋子": "shoes", "头发": "hair", "背景": "background",
    "包": "bag", "眼镜": "glasses", "杯子": "cup", "围巾": "scarf", "项链": "necklace", "手": "hand",
}  # fmt: skip
MAX_WORDS = 100


def region_prefix(text: str) -> tuple[str | None, str]:
    """``"region=top make it red"`` -> ("top", "make it red"); no prefix -> (None, text)."""
    match = _REGION_PREFIX.match(text.strip())
    if match is None:
        return None, text
    raw = next(group for group in match.groups() if group is not None)
    words = ", ".join(CHINESE_WORDS.get(w.strip(), w.strip()) for w in re.split(r"[,，、]", raw) if w.strip())
    if not words:
        raise InputError("say which region: region=<words>, e.g. region=top make it red")
    if len(words) > MAX_WORDS:
        raise InputError(f"region words are at most {MAX_WORDS} characters")
    return words, text.strip()[match.end() :]


def mask_prefix(text: str) -> tuple[bool, str]:
    """``"mask: make it red"`` -> (True, "make it red"): the attached image is the mask."""
    match = _MASK_PREFIX.match(text.strip())
    return (False, text) if match is None else (True, text.strip()[match.end() :])


def split_mask(attachments: Sequence[Attachment], said_mask: bool) -> tuple[Attachment | None, list[Attachment]]:
    """The mask among ``attachments`` (role ``mask``, or the only image after a ``mask:`` word) and the rest."""
    masks = [a for a in attachments if a.role == MASK_ROLE]
    rest = [a for a in attachments if a.role != MASK_ROLE]
    if said_mask and not masks:
        unnamed = [a for a in rest if a.role is None]
        if len(unnamed) != 1:
            raise InputError("mask: needs exactly one image attached (white = change, black = keep)")
        masks, rest = unnamed, [a for a in rest if a is not unnamed[0]]
    if len(masks) > 1:
        raise InputError("attach one mask image per edit")
    return (masks[0] if masks else None), rest


def check_mask(attachment: Attachment, sizes: Sequence[tuple[int, int]]) -> bool:
    """Refuse a mask that is no image, or whose shape or content does not fit an image it applies
    to (``sizes``: width, height of each targeted image); True when it covers (almost) everything."""
    check_image(attachment.data, attachment.filename)
    try:
        image = open_mask_image(attachment.data)
        full = True
        for number, size in enumerate(sizes, start=1):
            region = prepare_region(mask_from_image(image, size), image_number=number if len(sizes) > 1 else None)
            full = full and region.full
    except RegionError as exc:
        raise InputError(str(exc)) from None
    return full


def region_spec(words: str | None, mask_key: str | None, *, tryon: bool = False) -> RegionSpec:
    return RegionSpec(words=words, mask_key=mask_key, tryon=tryon)


def region_params(region: RegionSpec) -> dict[str, Any]:
    """What a turn keeps of its region (``Turn.params["region"]``)."""
    params: dict[str, Any] = {"source": region.source, "words": region.words, "tryon": region.tryon}
    if region.mask_key is not None:
        params["mask_key"] = region.mask_key
    if region.mask_keys:
        params["mask_keys"] = list(region.mask_keys)
    return params


def describe(params: dict[str, Any] | None) -> str | None:
    """``region: top`` for words, ``region: mask`` for a mask image (None: a whole-frame turn)."""
    region = (params or {}).get("region")
    if not isinstance(region, dict):
        return None
    words = region.get("words")
    if region.get("source") == "words":
        return f"region: {words}" if words else "region: clothes (try-on)"
    return "region: mask" if region.get("source") == "mask" else f"region: {region.get('source') or 'mask'}"
