"""How a job's references (product, scene, face images) condition each render, per engine family.

Which images a render sees (:class:`RenderInputs`: a main image and extra references):

* FLUX.2 klein takes a list natively, in this order: the current image (edits; for a post's
  further images, its first image), the persona's portrait (its consented photo, or the portrait
  it was created with), face references, products, the scene. At most
  :attr:`~engine.render.families.RenderFamily.max_references` in all, else :class:`~engine.specs.ReferenceLimitError`.
* FLUX.1 Kontext has one context image, so the references are composed into it
  (:func:`compose_context`): the main image (the current image, or a post's scene, or a photo
  persona's photo) at the output size with the other references in a strip on its right, each
  fitted into a cell; without a main image the references share a canvas of the output size.
  Kontext copies from its context tokens, so the product's own pixels reach the model; the strip
  costs a third more context tokens. (FLUX.1 Redux image tokens were measured against this, see
  README "Engine families": they carry a SigLIP summary of the image, not its details.)

This module is plain data work; engine.render.job_render encodes what it composes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from PIL import Image, ImageOps

from engine.specs import JobSpec, ReferenceLimitError, ReferenceRole, ReferenceSpec, snap

if TYPE_CHECKING:
    from engine.render.families import RenderFamily

#: order of roles in a klein reference list (after the current image and the persona's portrait)
_ROLE_ORDER = {ReferenceRole.FACE: 0, ReferenceRole.PRODUCT: 1, ReferenceRole.SCENE: 2}
_BACKGROUND = (255, 255, 255)


@dataclass
class RenderInputs:
    """The images one render is conditioned on: ``main`` (blob key; the image an edit changes)
    and ``extra`` reference keys after it, with a word for each for messages."""

    main: str | None = None
    extra: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)  # one per image: main first (when present)

    def add(self, key: str | None, label: str) -> None:
        if key is None or key == self.main or key in self.extra:
            return
        self.extra.append(key)
        self.labels.append(label)

    @property
    def count(self) -> int:
        return len(self.extra) + (self.main is not None)


def _ordered(references: list[ReferenceSpec]) -> list[ReferenceSpec]:
    return sorted(references, key=lambda ref: _ROLE_ORDER[ref.role])


def _label(ref: ReferenceSpec) -> str:
    return f"{ref.role} {ref.name!r}" if ref.name else ("a " + ref.role)


def scene_key(spec: JobSpec) -> str | None:
    """A post's scene: ``context_keys[0]`` (how scenes came before references), else its first
    ``scene`` reference."""
    if spec.context_keys:
        return spec.context_keys[0]
    return next((ref.key for ref in spec.references if ref.role == ReferenceRole.SCENE), None)


def portrait_key(spec: JobSpec) -> str | None:
    return spec.persona.photo_key or spec.persona.reference_key


def check_limit(inputs: RenderInputs, family: RenderFamily, what: str) -> RenderInputs:
    limit = family.max_references
    if limit is not None and inputs.count > limit:
        listed = ", ".join(inputs.labels)
        raise ReferenceLimitError(
            f"{family.label} takes at most {limit} reference images per render; {what} would need "
            f"{inputs.count} ({listed}). Remove {inputs.count - limit} product or scene image(s)."
        )
    return inputs


def first_image_inputs(spec: JobSpec, family: RenderFamily) -> RenderInputs:
    """The first image of a post (GENERATE)."""
    scene = scene_key(spec)
    refs = [ref for ref in _ordered(spec.references) if ref.key != scene]
    if family.native_references:
        inputs = RenderInputs()
        inputs.add(portrait_key(spec), "the persona's portrait")
        for ref in refs:
            inputs.add(ref.key, _label(ref))
        inputs.add(scene, "the scene")
        return check_limit(inputs, family, "this post")
    photo = spec.persona.photo_key
    main = scene or photo
    inputs = RenderInputs(main=main, labels=["the scene" if scene else "the persona's photo"] if main else [])
    if scene is not None:
        inputs.add(photo, "the persona's photo")
    for ref in refs:
        inputs.add(ref.key, _label(ref))
    return inputs


def variation_inputs(spec: JobSpec, family: RenderFamily, first_key: str) -> RenderInputs:
    """A post's further images: variations of its first image (which already shows the scene and
    the products). klein also sees the portrait and products, as many as fit."""
    inputs = RenderInputs(main=first_key, labels=["the post's first image"])
    if family.native_references:
        inputs.add(portrait_key(spec), "the persona's portrait")
        for ref in _ordered(spec.references):
            if ref.role != ReferenceRole.SCENE and inputs.count < (family.max_references or 0):
                inputs.add(ref.key, _label(ref))
    return inputs


def edit_inputs(spec: JobSpec, family: RenderFamily, current_key: str) -> RenderInputs:
    """An edit of ``current_key``: the post's and this edit's references join the current image."""
    inputs = RenderInputs(main=current_key, labels=["the current image"])
    if family.native_references:
        inputs.add(portrait_key(spec), "the persona's portrait")
    for ref in _ordered(spec.references):
        inputs.add(ref.key, _label(ref))
    return check_limit(inputs, family, "this edit")


def check_job(spec: JobSpec, family: RenderFamily, *, edit: bool) -> None:
    """Raise :class:`ReferenceLimitError` before any render when a job has too many references."""
    if family.max_references is None:  # composed into the context: no limit
        return
    if edit:
        for index in spec.targets:
            if 0 <= index < len(spec.context_keys):
                edit_inputs(spec, family, spec.context_keys[index])
    else:
        first_image_inputs(spec, family)


# -- Kontext: composing references into the context image ---------------------------------------


def compose_context(
    main: Image.Image | None, others: list[Image.Image], width: int, height: int, multiple: int
) -> Image.Image:
    """One Kontext context image: ``main`` at ``width`` x ``height`` with ``others`` stacked in a
    strip a third as wide on its right; without ``main``, ``others`` side by side on a canvas of
    ``width`` x ``height``. Each reference keeps its aspect (padded white); sides snap to ``multiple``."""
    if not others:
        if main is None:
            raise ValueError("nothing to compose")
        return main.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
    if main is None:
        canvas = Image.new("RGB", (width, height), _BACKGROUND)
        cell = max(1, width // len(others))
        for i, image in enumerate(others):
            canvas.paste(ImageOps.pad(image.convert("RGB"), (cell, height), color=_BACKGROUND), (i * cell, 0))
        return canvas
    strip = snap(width / 3, multiple)
    canvas = Image.new("RGB", (width + strip, height), _BACKGROUND)
    canvas.paste(main.convert("RGB").resize((width, height), Image.Resampling.LANCZOS), (0, 0))
    cell = max(1, height // len(others))
    for i, image in enumerate(others):
        canvas.paste(ImageOps.pad(image.convert("RGB"), (strip, cell), color=_BACKGROUND), (width, i * cell))
    return canvas
