"""The reference images of a masked edit (region edits), in the form each family's inpaint
pipeline takes them (engine.render.families: ``RenderFamily.inpaint``). PIL only.

* klein (``Flux2KleinInpaintPipeline(image_reference=[...])``): the pipeline crops every reference
  to the first one's size, so the first is fitted to the render's area and the others padded
  (white) to its size: nothing is cut off.
* Kontext (``FluxKontextInpaintPipeline(image_reference=...)``): one image; several references go
  side by side on one white canvas; scaled to about the render's area (its tokens are paid for at
  every step).
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageOps

_WHITE = (255, 255, 255)


def _snap(value: float, multiple: int) -> int:
    return max(multiple, round(value / multiple) * multiple)


def fit_area(image: Image.Image, area: int, multiple: int) -> Image.Image:
    """``image`` in RGB scaled to about ``area`` pixels, sides multiples of ``multiple``."""
    image = image.convert("RGB")
    scale = (area / (image.width * image.height)) ** 0.5
    size = (_snap(image.width * scale, multiple), _snap(image.height * scale, multiple))
    return image if size == image.size else image.resize(size, Image.Resampling.LANCZOS)


def klein_references(references: Sequence[Image.Image], area: int, multiple: int) -> list[Image.Image]:
    """klein's reference list: the first fitted to ``area``, the others padded (white) to its size."""
    if not references:
        return []
    from engine.render.klein_pipeline import fit_reference

    first = fit_reference(references[0], area, multiple)
    return [first] + [ImageOps.pad(ref.convert("RGB"), first.size, color=_WHITE) for ref in references[1:]]


def kontext_reference(references: Sequence[Image.Image], area: int, multiple: int) -> Image.Image | None:
    """Kontext's one reference: the image, or several side by side (each padded into its cell), at about ``area``."""
    if not references:
        return None
    if len(references) == 1:
        return fit_area(references[0], area, multiple)
    height = _snap((area / len(references)) ** 0.5, multiple)
    cell = _snap(area / height / len(references), multiple)
    canvas = Image.new("RGB", (cell * len(references), height), _WHITE)
    for i, image in enumerate(references):
        canvas.paste(ImageOps.pad(image.convert("RGB"), (cell, height), color=_WHITE), (i * cell, 0))
    return canvas
