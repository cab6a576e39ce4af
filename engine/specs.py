"""Job specs and results: the plain JSON data that crosses the queue.

The commands layer builds a :class:`JobSpec`, the queue carries ``spec.model_dump(mode="json")``
and the worker rebuilds it with ``JobSpec.model_validate``. Nothing pickled ever crosses.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar

from pydantic import BaseModel, Field

T = TypeVar("T")


class JobKind(StrEnum):
    CREATE_PERSONA = "create_persona"
    GENERATE = "generate"  # N images of a post: text-to-image, then Kontext variations
    EDIT = "edit"  # an instruction applied to the current image(s) of a post
    REGENERATE = "regenerate"  # the same generate/edit spec again with a new seed
    TRAIN_PERSONA = "train_persona"  # candidates -> identity filter -> a persona LoRA version
    VIDEO = "video"  # a short clip animating a post's approved image (engine.video)


class ReferenceRole(StrEnum):
    """The role an image plays in a render (region edits add a ``mask`` role beside these)."""

    PRODUCT = "product"
    SCENE = "scene"
    FACE = "face"


EngineFamily = Literal["kontext", "klein"]


class ReferenceSpec(BaseModel):
    """An image with a role that conditions a render: a product, a scene or a face."""

    role: ReferenceRole
    key: str  # blob key (sha256 of the stored bytes)
    name: str | None = None  # library name (products)


class ReferenceLimitError(ValueError):
    """More reference images than the engine family takes; ``str(exc)`` is meant for the user."""


class PersonaSpec(BaseModel):
    persona_id: int = 0
    archetype: str
    #: ``(lora name, weight)`` pairs; names are ``"<archetype>/<file stem>"`` under LORA_DIR.
    lora_mix: list[tuple[str, float]] = Field(default_factory=list)
    seed: int = 0
    reference_key: str | None = None  # blob key of the reference portrait
    embedding: list[float] | None = None  # face embedding of the reference portrait
    photo_key: str | None = None  # blob key of the consented photo a persona was made from
    #: the trained version in use (0: the blend) and the blob key of its LoRA file
    version: int = 0
    version_lora_key: str | None = None


class TrainParams(BaseModel):
    """``/persona train`` options; ``None`` takes the model's default (tiny: 4 images, 20 steps)."""

    images: int | None = Field(default=None, ge=1, le=128)
    steps: int | None = Field(default=None, ge=1, le=5000)
    rank: int | None = Field(default=None, ge=1, le=128)
    #: steps between checkpoints (tiny: 5, real: 50)
    checkpoint_every: int | None = Field(default=None, ge=1, le=5000)


class TrainDefaults(NamedTuple):
    """What a ``TrainParams`` field left ``None`` becomes."""

    images: int
    steps: int
    rank: int
    checkpoint_every: int


#: training defaults for test-sized (tiny) models and for real ones
TINY_TRAIN_DEFAULTS = TrainDefaults(images=4, steps=20, rank=16, checkpoint_every=5)
REAL_TRAIN_DEFAULTS = TrainDefaults(images=32, steps=500, rank=16, checkpoint_every=50)


class RenderParams(BaseModel):
    steps: int = Field(default=28, ge=1, le=100)
    guidance: float = Field(default=2.5, ge=0.0, le=20.0)
    width: int = Field(default=1024, ge=16, le=2048)
    height: int = Field(default=1024, ge=16, le=2048)
    #: candidates tried by the identity gate per wanted image
    max_tries: int = Field(default=3, ge=1, le=10)


#: the words a try-on's region is found by when the user gives none
TRYON_WORDS = "clothes, top, dress, jacket"


class RegionSpec(BaseModel):
    """Where a region edit changes the image (engine.render.regions): words, clicks (``[x, y, positive]``
    in image pixels) or a mask image; the worker stores one mask per target (``mask_keys``) before it
    renders, so a retry or a regenerate uses the same masks. ``tryon``: the products are a garment."""

    words: str | None = Field(default=None, max_length=200)
    points: list[tuple[float, float, bool]] = Field(default_factory=list, max_length=64)
    mask_key: str | None = None  # blob key of an attached mask image (white = change)
    #: per target (``JobSpec.targets`` order): blob keys of the masks (PNG, the image's size)
    mask_keys: list[str] = Field(default_factory=list)
    tryon: bool = False
    strength: float = Field(default=1.0, gt=0.0, le=1.0)

    @property
    def source(self) -> str:
        """What the region came from: ``words``, ``clicks`` or ``mask`` (what /history shows)."""
        if self.words or (self.tryon and not self.points and self.mask_key is None):
            return "words"  # a try-on without words looks for clothes (TRYON_WORDS)
        return "clicks" if self.points else "mask"


#: the lengths a user may ask for (seconds)
MIN_SECONDS = 3.0
MAX_SECONDS = 5.0
#: slowest frame rate a clip is delivered at, even with the tiny model
MIN_FPS = 8
#: Wan's VAE compresses time 4x: a generated clip has 4k+1 frames
WAN_TEMPORAL_FACTOR = 4


class VideoParams(BaseModel):
    """A clip's length, frame rate and render settings (defaults: the video model's)."""

    seconds: float = Field(default=MIN_SECONDS, ge=MIN_SECONDS, le=MAX_SECONDS)
    fps: int = Field(default=24, ge=MIN_FPS, le=30)
    steps: int = Field(default=30, ge=1, le=100)
    guidance: float = Field(default=5.0, ge=0.0, le=20.0)
    #: output area (width x height); the sides follow the source image's aspect ratio
    width: int = Field(default=1280, ge=16, le=1920)
    height: int = Field(default=704, ge=16, le=1920)
    #: renders the identity gate may make: the first, and one retry with a new seed
    max_tries: int = Field(default=2, ge=1, le=3)

    @property
    def frames(self) -> int:
        """Frames delivered: ``seconds x fps``, rounded."""
        return max(1, round(self.seconds * self.fps))

    @property
    def generated_frames(self) -> int:
        """Frames Wan generates: the smallest 4k+1 that is at least :attr:`frames` (then trimmed)."""
        return wan_frame_count(self.frames)


def wan_frame_count(frames: int) -> int:
    """The smallest ``4k + 1 >= frames`` (Wan's VAE turns 4k+1 frames into k+1 latent frames)."""
    k = max(0, math.ceil((frames - 1) / WAN_TEMPORAL_FACTOR))
    return WAN_TEMPORAL_FACTOR * k + 1


#: the offline, randomly initialised video model (engine.video.tiny_wan)
TINY_VIDEO_MODEL = "tiny"


def default_video_params(model: str, toy: bool | None = None) -> VideoParams:
    """Tiny (test-sized) models: 64x64, 8 fps, 4 steps, no guidance; real weights (Wan 2.2 TI2V-5B):
    720p (1280x704 area), 24 fps (its native rate), 30 steps, guidance 5."""
    if toy if toy is not None else (model == TINY_VIDEO_MODEL or is_toy_model(model)):
        return VideoParams(seconds=3, fps=8, steps=4, guidance=1.0, width=64, height=64)
    return VideoParams(seconds=5, fps=24, steps=30, guidance=5.0, width=1280, height=704)


class JobSpec(BaseModel):
    job_id: str
    kind: JobKind
    user_id: int = 0  # storage user id of whoever asked
    thread_id: int | None = None  # storage thread id (posts, edits)
    turn_id: int | None = None  # storage turn that receives the result
    persona: PersonaSpec
    prompt: str = ""  # the post's prompt or the edit instruction
    count: int = Field(default=1, ge=1, le=4)
    #: blob keys: for EDIT the post's current images, for GENERATE an optional scene image
    context_keys: list[str] = Field(default_factory=list)
    #: indexes into ``context_keys`` that an EDIT changes (``all:`` edits every image)
    targets: list[int] = Field(default_factory=lambda: [0])
    #: for REGENERATE: the kind of the turn being regenerated (generate or edit)
    of_kind: JobKind | None = None
    seed: int = Field(default=0, ge=0, lt=2**32)
    params: RenderParams = Field(default_factory=RenderParams)
    #: the post's and this edit's references, in order (engine.render.references decides how they enter)
    references: list[ReferenceSpec] = Field(default_factory=list)
    #: TRAIN_PERSONA: the training options
    train: TrainParams | None = None
    #: EDIT: change only this region of each target (engine.render.regions)
    region: RegionSpec | None = None

    def with_region_masks(self, keys: Sequence[str]) -> JobSpec:
        """This region edit with its masks (made by a worker, maybe an earlier attempt), unless it
        has them already or is not a region edit."""
        if self.region is None or self.region.mask_keys or not keys:
            return self
        return self.model_copy(update={"region": self.region.model_copy(update={"mask_keys": list(keys)})})

    #: VIDEO: the clip's length, frame rate and render settings (``context_keys[0]`` is the image animated)
    video: VideoParams | None = None
    #: an EDIT sent while the post's first images render: held until this turn is done (its
    #: images become ``context_keys`` then)
    wait_for_turn: int | None = None


class JobResult(BaseModel):
    """What a finished job produced. Images are blob keys; the blobs are already stored."""

    image_keys: list[str] = Field(default_factory=list)
    seeds: list[int] = Field(default_factory=list)
    #: identity similarity (0-1) per image; ``None`` when no face could be compared
    identity_scores: list[float | None] = Field(default_factory=list)
    #: per image: "ok", "below threshold", "no face found", "reference has no face"
    identity_notes: list[str] = Field(default_factory=list)
    tries: list[int] = Field(default_factory=list)
    #: the persona LoRA mix the images were rendered with (create_persona: the drawn mix)
    lora_mix: list[tuple[str, float]] = Field(default_factory=list)
    # create_persona
    reference_key: str | None = None
    embedding: list[float] | None = None
    #: train_persona: the new version's LoRA blob key and its training report
    training: dict[str, Any] | None = None
    #: video: the clip (blob keys of the MP4, its poster and a smaller copy for uploads; seconds,
    #: fps, frames, size, bytes; the identity verdict on its sampled frames), see engine.video.video_job
    video: dict[str, Any] | None = None
    seconds: float = 0.0
    #: region edits: per target, True where the mask covered (almost) everything (a normal edit)
    region_full: list[bool] = Field(default_factory=list)
    #: seconds by stage: text_encode, reference_encode, denoise, vae_decode, identity_gate,
    #: png_encode, storage (engine.render.job_render.JobRender.timings)
    timings: dict[str, float] = Field(default_factory=dict)


#: transformers narrower than this (heads × head dim; FLUX.1 has 3072) are test-sized
TOY_TRANSFORMER_WIDTH = 512


@dataclass(frozen=True, eq=False)
class FamilyFacts:
    """What every layer may know of an engine family without loading a model: its names, its
    reference limit, its render defaults and where its LoRA library lives. The engine's
    engine.render.families.RenderFamily adds the family's rendering steps to these facts."""

    name: EngineFamily
    #: for messages: "FLUX.1 Kontext", "FLUX.2 klein"
    label: str
    #: ``model_index.json`` ``_class_name`` of its pipelines
    pipeline_class: str
    #: the offline, randomly initialised model of the family
    tiny_model: str
    #: reference images one render takes in all; ``None``: references are composed into the context
    max_references: int | None
    #: render defaults of test-sized and of real weights
    toy_params: RenderParams
    real_params: RenderParams
    #: the tiny model writes its LoRA library in ``LORA_DIR/<name>/`` (Kontext's: ``LORA_DIR`` itself)
    tiny_library_in_own_folder: bool

    def default_params(self, toy: bool) -> RenderParams:
        return (self.toy_params if toy else self.real_params).model_copy()

    def lora_root(self, lora_dir: Path, model: str = "") -> Path:
        """The family's LoRA library: ``lora_dir/<name>/``, or ``lora_dir`` itself when that folder
        is absent (outside a tiny model that writes its own folder)."""
        own = Path(lora_dir) / self.name
        if own.is_dir() or (self.tiny_library_in_own_folder and model == self.tiny_model):
            return own
        return Path(lora_dir)


KONTEXT_FACTS = FamilyFacts(
    name="kontext",
    label="FLUX.1 Kontext",
    pipeline_class="FluxKontextPipeline",
    tiny_model="tiny",
    max_references=None,
    toy_params=RenderParams(steps=4, guidance=2.5, width=64, height=64, max_tries=2),
    real_params=RenderParams(steps=28, guidance=2.5, width=1024, height=1024, max_tries=3),
    tiny_library_in_own_folder=False,
)
KLEIN_FACTS = FamilyFacts(
    name="klein",
    label="FLUX.2 klein",
    pipeline_class="Flux2KleinPipeline",
    tiny_model="tiny-klein",
    max_references=4,  # BFL's documented limit
    toy_params=RenderParams(steps=4, guidance=1.0, width=64, height=64, max_tries=2),
    real_params=RenderParams(steps=4, guidance=1.0, width=1024, height=1024, max_tries=3),  # distilled
    tiny_library_in_own_folder=True,
)
FAMILY_FACTS: dict[EngineFamily, FamilyFacts] = {facts.name: facts for facts in (KONTEXT_FACTS, KLEIN_FACTS)}
#: the offline, randomly initialised models: name -> family
TINY_MODELS: dict[str, EngineFamily] = {facts.tiny_model: facts.name for facts in FAMILY_FACTS.values()}
#: pipeline classes (model_index.json ``_class_name``) -> family
PIPELINE_FAMILIES: dict[str, EngineFamily] = {facts.pipeline_class: facts.name for facts in FAMILY_FACTS.values()}

#: archetypes of the random LoRA library written for the tiny model
TINY_ARCHETYPES = ("sweet", "elegant", "boss", "puppy")


def is_toy_model(model: str | Mapping[str, Any]) -> bool:
    """The one "test-sized model" rule: a transformer narrower than :data:`TOY_TRANSFORMER_WIDTH`.

    ``model`` is a transformer config (a loaded pipeline's ``transformer.config``) or a model
    name: ``tiny``, or a local pipeline folder whose ``transformer/config.json`` is read without
    loading anything. Such models get small, fast defaults; hub ids and unreadable folders do not.
    """
    if isinstance(model, Mapping):
        config: Any = model
    elif model in TINY_MODELS:
        return True
    else:
        try:
            config = json.loads((Path(model).expanduser() / "transformer" / "config.json").read_text())
        except (OSError, ValueError):
            return False  # a hub id, or a folder this process cannot read: production defaults
    try:
        width = int(config["num_attention_heads"]) * int(config["attention_head_dim"])
    except (KeyError, TypeError, ValueError):
        return False
    return width < TOY_TRANSFORMER_WIDTH


def _model_index(model: str) -> dict[str, Any] | None:
    """``model_index.json`` of a local folder, or of a hub id from the local cache only."""
    folder = Path(model).expanduser()
    try:
        if folder.is_dir():
            return json.loads((folder / "model_index.json").read_text())
        if model.count("/") != 1 or model.startswith((".", "/", "~")):
            return None
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, "model_index.json")
        return json.loads(Path(cached).read_text()) if isinstance(cached, str) else None
    except (OSError, ValueError):
        return None


def model_family(model: str) -> EngineFamily:
    """The engine family of ``model``, decided without loading anything.

    ``tiny`` is Kontext, ``tiny-klein`` klein; a local folder or hub id by its model_index.json
    ``_class_name`` (hub ids from the local hub cache only, never the network); Kontext otherwise.
    Its facts: :func:`family_facts`; its rendering steps: engine.render.families.family_of.
    """
    if model in TINY_MODELS:
        return TINY_MODELS[model]
    index = _model_index(model) or {}
    return PIPELINE_FAMILIES.get(str(index.get("_class_name", "")), "kontext")


def family_facts(model: str) -> FamilyFacts:
    """The facts of ``model``'s engine family (:func:`model_family`)."""
    return FAMILY_FACTS[model_family(model)]


def reference_limit(model: str) -> int | None:
    """Reference images one render may take in all (klein: the current image of an edit, the
    persona's portrait, products and the scene); ``None`` when references are composed (Kontext)."""
    return family_facts(model).max_references


def default_params(model: str) -> RenderParams:
    """Render defaults: small and fast for test-sized models; otherwise the family's usual ones
    (Kontext-dev: 28 steps, guidance 2.5; klein: 4 distilled steps, no guidance)."""
    return family_facts(model).default_params(is_toy_model(model))


def size_limits(model: str) -> tuple[int, int]:
    """Smallest and largest side (pixels) a user may ask for; sides are multiples of 16."""
    return (32, 256) if is_toy_model(model) else (256, 2048)


def spread_by_targets(values: Sequence[T], targets: Sequence[int], base: Sequence[T], size: int, fill: T) -> list[T]:
    """Per-image values of a job spread over a post's ``size`` images.

    ``values`` follow ``targets`` order (an edit renders only its targets); every other image
    keeps its value from ``base`` (the parent turn's list), padded with ``fill``. Targets out of
    range are ignored.
    """
    spread = (list(base) + [fill] * size)[:size]
    for target, value in zip(targets, values, strict=False):
        if 0 <= target < size:
            spread[target] = value
    return spread


def snap(value: float, multiple: int) -> int:
    """Round ``value`` to the nearest positive multiple of ``multiple`` (image sides, reference strips)."""
    return max(multiple, round(value / multiple) * multiple)
