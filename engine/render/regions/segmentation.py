"""Masks from words and from clicks: a text-grounded detector (OWLv2) and SAM-HQ (or SAM).

``Segmenter(spec)`` loads its models once, on first need (``spec``: ``tiny`` builds both offline,
engine.render.regions.tiny_segmentation; otherwise ``"<detector>,<sam>"``, each a hub id or a local
folder; empty: :data:`DEFAULT_SEG_MODELS`, both Apache-2.0).

* :meth:`Segmenter.mask_from_words`: the detector's boxes for the words (comma-separated phrases;
  boxes scoring at least ``threshold`` and half the best score, at most :data:`MAX_BOXES`), each
  turned into a mask by SAM with the box as its prompt and kept inside the box; the union.
  :class:`~engine.render.regions.masks.NothingFound` when no box qualifies.
* :meth:`Segmenter.mask_from_points`: SAM with positive and negative points.

SAM's image embedding (the expensive part) is computed once per image and kept in an LRU cache by
key (a blob key, or the image's own hash), so every further click on the same image only runs the
prompt encoder and the mask decoder.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from cachetools import LRUCache
from PIL import Image

from engine.render.regions.masks import NothingFound, RegionError

#: production detector and SAM (both Apache-2.0)
DEFAULT_SEG_MODELS = "google/owlv2-base-patch16-ensemble,syscv-community/sam-hq-vit-base"
#: detector boxes kept per request
MAX_BOXES = 4
#: a box smaller than this share of the image's longer side is grown to it
MIN_BOX_SHARE = 0.05
#: a box keeps SAM's mask inside itself, grown by this share of its own size
BOX_SLACK = 0.05
DEFAULT_THRESHOLD = 0.1


@dataclass
class Point:
    """A click in image pixels; ``positive`` false: exclude what is under it."""

    x: float
    y: float
    positive: bool = True


@dataclass
class _Embedding:
    image_embeddings: torch.Tensor
    intermediate: list[torch.Tensor] | None  # SAM-HQ's early ViT features
    original_sizes: torch.Tensor
    reshaped_input_sizes: torch.Tensor


def _source(name: str) -> str:
    path = Path(name).expanduser()
    return str(path) if path.is_dir() else name


class Segmenter:
    """The detector and SAM of a worker process, loaded once when first needed."""

    def __init__(self, spec: str = "", *, device: str | None = None, threshold: float = DEFAULT_THRESHOLD,
                 cache_size: int = 8) -> None:  # fmt: skip
        self.spec = spec.strip() or DEFAULT_SEG_MODELS
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.threshold = threshold
        #: ``embeddings``: SAM image embeddings computed; ``masks``: masks decoded; ``detections``
        self.stats: Counter[str] = Counter()
        self._cache: LRUCache[str, _Embedding] = LRUCache(maxsize=cache_size)
        self._lock = threading.RLock()
        self._detector: tuple[Any, Any] | None = None  # (model, processor), loaded when words come
        self._sam: tuple[Any, Any] | None = None  # loaded on the first mask

    @classmethod
    def from_models(
        cls, detector: Any, detector_processor: Any, sam: Any, sam_processor: Any, **kwargs: Any
    ) -> Segmenter:
        """A segmenter of models already built (tests, benches)."""
        segmenter = cls("given", **kwargs)
        segmenter._detector = (detector.to(segmenter.device), detector_processor)
        segmenter._sam = (sam.to(segmenter.device), sam_processor)
        return segmenter

    def _names(self) -> list[str]:
        names = [part.strip() for part in self.spec.split(",")]
        if len(names) != 2 or not all(names):
            raise ValueError(f"ENGINE_SEG_MODEL must be 'tiny' or '<detector>,<sam>', not {self.spec!r}")
        return names

    def load(self) -> None:
        """Load both models now (each otherwise loads on its first use: clicks need SAM only)."""
        self.models  # noqa: B018

    @property
    def detector(self) -> tuple[Any, Any]:
        with self._lock:
            if self._detector is None:
                if self.spec == "tiny":
                    from engine.render.regions.tiny_segmentation import build_tiny_owlv2

                    model, processor = build_tiny_owlv2()
                else:
                    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

                    name = _source(self._names()[0])
                    model = AutoModelForZeroShotObjectDetection.from_pretrained(name).eval()
                    processor = AutoProcessor.from_pretrained(name)
                self._detector = (model.to(self.device), processor)
            return self._detector

    @property
    def sam(self) -> tuple[Any, Any]:
        with self._lock:
            if self._sam is None:
                if self.spec == "tiny":
                    from engine.render.regions.tiny_segmentation import build_tiny_sam

                    model, processor = build_tiny_sam(hq=True)
                else:
                    from transformers import AutoModel, AutoProcessor

                    name = _source(self._names()[1])
                    model, processor = AutoModel.from_pretrained(name).eval(), AutoProcessor.from_pretrained(name)
                self._sam = (model.to(self.device), processor)
            return self._sam

    @property
    def models(self) -> tuple[Any, Any, Any, Any]:
        """(detector, its processor, SAM, its processor), loading what is not loaded yet."""
        return (*self.detector, *self.sam)

    @property
    def hq(self) -> bool:
        return self.sam[0].config.model_type == "sam_hq"

    # -- SAM ----------------------------------------------------------------------------------
    def embedding(self, image: Image.Image, key: str | None = None) -> _Embedding:
        """SAM's embedding of ``image``, from the cache when ``key`` (default: the pixels' hash) is in it."""
        key = key or hashlib.sha256(image.convert("RGB").tobytes() + repr(image.size).encode()).hexdigest()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                return cached
            sam, processor = self.sam
            inputs = processor(images=image.convert("RGB"), return_tensors="pt")
            with torch.inference_mode():
                pixels = inputs["pixel_values"].to(self.device, sam.dtype)
                if self.hq:
                    embeddings, intermediate = sam.get_image_embeddings(pixels)
                else:
                    embeddings, intermediate = sam.get_image_embeddings(pixels), None
            embedding = _Embedding(embeddings, intermediate, inputs["original_sizes"], inputs["reshaped_input_sizes"])
            self.stats["embeddings"] += 1
            self._cache[key] = embedding
            return embedding

    def _scale(self, embedding: _Embedding) -> tuple[float, float]:
        """Factors from image pixels to SAM's input pixels (the resized image, before padding)."""
        old_h, old_w = (int(v) for v in embedding.original_sizes[0])
        new_h, new_w = (int(v) for v in embedding.reshaped_input_sizes[0])
        return new_w / old_w, new_h / old_h

    def _decode(self, image: Image.Image, key: str | None, **prompts: np.ndarray) -> np.ndarray:
        """SAM's masks (N x H x W bool) for ``points`` (1 x P x 2, image pixels) with ``labels``
        (1 x P), or for ``boxes`` (N x 4, image pixels): one mask per box."""
        embedding = self.embedding(image, key)
        sam, processor = self.sam
        sx, sy = self._scale(embedding)
        feed: dict[str, torch.Tensor] = {}
        if "points" in prompts:
            points = prompts["points"].astype(np.float32) * np.array([sx, sy], np.float32)
            feed["input_points"] = torch.from_numpy(points[None]).to(self.device)  # (1, 1, P, 2)
            feed["input_labels"] = torch.from_numpy(prompts["labels"].astype(np.int64)[None]).to(self.device)
        if "boxes" in prompts:
            boxes = prompts["boxes"].astype(np.float32) * np.array([sx, sy, sx, sy], np.float32)
            feed["input_boxes"] = torch.from_numpy(boxes[None]).to(self.device)  # (1, N, 4)
        extra = {"intermediate_embeddings": embedding.intermediate} if embedding.intermediate is not None else {}
        with torch.inference_mode():
            out = sam(image_embeddings=embedding.image_embeddings, multimask_output=False, **feed, **extra)
        masks = processor.post_process_masks(
            out.pred_masks.cpu(), embedding.original_sizes, embedding.reshaped_input_sizes
        )[0]  # (N, 1, H, W)
        self.stats["masks"] += 1
        return masks[:, 0].numpy().astype(bool)

    def mask_from_points(self, image: Image.Image, points: Sequence[Point], key: str | None = None) -> np.ndarray:
        """The mask SAM draws for ``points`` (at least one positive) on ``image``."""
        if not any(p.positive for p in points):
            raise RegionError("click at least once on what should change")
        width, height = image.size
        if any(not (0 <= p.x < width and 0 <= p.y < height) for p in points):
            raise RegionError(f"a click lies outside the {width}x{height} image")
        coords = np.array([[[p.x, p.y] for p in points]], dtype=np.float32)
        labels = np.array([[1 if p.positive else 0 for p in points]])
        return self._decode(image, key, points=coords, labels=labels)[0]

    # -- words --------------------------------------------------------------------------------
    def boxes(self, image: Image.Image, words: str) -> list[tuple[float, float, float, float]]:
        """The detector's boxes for ``words`` in image pixels, best first (maybe none)."""
        queries = [q.strip() for q in words.split(",") if q.strip()]
        if not queries:
            raise RegionError("say which region: region=<words>, e.g. region=top")
        detector, processor = self.detector
        rgb = image.convert("RGB")
        inputs = processor(text=[queries], images=rgb, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            outputs = detector(**inputs)
        side = max(rgb.size)  # OWLv2 pads the image to a square before predicting
        found = processor.post_process_grounded_object_detection(
            outputs, threshold=self.threshold, target_sizes=[(side, side)], text_labels=[queries]
        )[0]
        self.stats["detections"] += 1
        scores = found["scores"].float().cpu()
        if scores.numel() == 0:
            return []
        order = torch.argsort(scores, descending=True)
        best = float(scores[order[0]])
        kept = [i for i in order.tolist() if float(scores[i]) >= 0.5 * best][:MAX_BOXES]
        return [_grown(tuple(found["boxes"][i].float().cpu().tolist()), rgb.size) for i in kept]

    def mask_from_words(
        self, image: Image.Image, words: str, key: str | None = None, image_number: int | None = None
    ) -> np.ndarray:
        """The union of SAM's masks for the detector's boxes of ``words``, each kept inside its box."""
        boxes = self.boxes(image, words)
        if not boxes:
            raise NothingFound(words.strip(), image_number)
        masks = self._decode(image, key, boxes=np.array(boxes, dtype=np.float32))
        union = np.zeros((image.height, image.width), dtype=bool)
        for box, mask in zip(boxes, masks, strict=True):
            inside = _box_mask(box, image.size, BOX_SLACK)
            piece = mask & inside
            union |= piece if piece.any() else _box_mask(box, image.size, 0.0)
        return union


def _grown(box: tuple[float, ...], size: tuple[int, int]) -> tuple[float, float, float, float]:
    """``box`` clipped to the image and grown to at least :data:`MIN_BOX_SHARE` of its longer side."""
    width, height = size
    least = MIN_BOX_SHARE * max(width, height)
    x0, y0, x1, y1 = (max(0.0, min(box[0], width)), max(0.0, min(box[1], height)),
                      max(0.0, min(box[2], width)), max(0.0, min(box[3], height)))  # fmt: skip
    if x1 - x0 < least:
        cx = (x0 + x1) / 2
        x0, x1 = max(0.0, cx - least / 2), min(float(width), cx + least / 2)
    if y1 - y0 < least:
        cy = (y0 + y1) / 2
        y0, y1 = max(0.0, cy - least / 2), min(float(height), cy + least / 2)
    return x0, y0, x1, y1


def _box_mask(box: tuple[float, float, float, float], size: tuple[int, int], slack: float) -> np.ndarray:
    width, height = size
    x0, y0, x1, y1 = box
    dx, dy = slack * (x1 - x0), slack * (y1 - y0)
    mask = np.zeros((height, width), dtype=bool)
    top, bottom = max(0, int(np.floor(y0 - dy))), min(height, int(np.ceil(y1 + dy)))
    left, right = max(0, int(np.floor(x0 - dx))), min(width, int(np.ceil(x1 + dx)))
    mask[top:bottom, left:right] = True
    return mask
