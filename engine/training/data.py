"""A persona's training set: candidate prompts, the identity / duplicate filter, captions.

Candidates are renders of the persona in typical e-commerce scenes, outfits, poses and framings
(:data:`SCENES` and friends, combined deterministically from the job's seed). The filter keeps a
candidate when its largest face matches the persona's reference with the identity gate's
similarity and threshold, then drops near-duplicates among the kept ones; every rejection has a
reason. With no reference face (tiny random weights) identity cannot be checked: everything that
is not a duplicate is kept, and the report says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from engine.render.identity import Embedder, similarity

SCENES = (
    "in a bright minimalist living room",
    "at a café table by the window",
    "on a city street at golden hour",
    "in a photo studio with a plain backdrop",
    "in a modern kitchen",
    "on a beach boardwalk",
    "in a clothing boutique",
    "in a cosy bedroom with soft morning light",
    "in an office with plants",
    "in a park under trees",
)
OUTFITS = (
    "a white blouse",
    "a beige trench coat",
    "a casual hoodie",
    "a summer dress",
    "a black blazer",
    "a knit sweater",
    "a denim jacket",
    "sportswear",
)
POSES = (
    "smiling at the camera",
    "holding a product up to the camera",
    "looking over the shoulder",
    "sitting relaxed",
    "walking towards the camera",
    "laughing naturally",
)
FRAMINGS = ("close-up portrait", "head and shoulders shot", "half-body shot", "three-quarter shot")

#: reasons a candidate is not kept
REASON_NO_FACE = "no face"
REASON_SCORE = "score"
REASON_DUPLICATE = "duplicate"

#: two kept images whose 16x16 grey thumbnails differ by less than this (mean abs, 0-255) are duplicates
DUPLICATE_PIXEL_DISTANCE = 6.0
#: two kept faces this similar (on the identity scale) are the same shot twice
DUPLICATE_FACE_SIMILARITY = 0.97


def trigger_word(persona_id: int) -> str:
    """The persona's trigger token in captions: short, rare, stable (``pst<id>``)."""
    return f"pst{persona_id}"


def candidate_prompts(count: int, seed: int) -> list[str]:
    """``count`` varied prompts (scene, outfit, pose, framing), the same for the same seed."""
    rng = np.random.default_rng(seed)
    prompts = []
    for i in range(count):
        scene = SCENES[(i + int(rng.integers(len(SCENES)))) % len(SCENES)]
        outfit, pose, framing = (str(rng.choice(options)) for options in (OUTFITS, POSES, FRAMINGS))
        prompts.append(f"{framing} photo of a young adult wearing {outfit}, {pose}, {scene}, natural light")
    return prompts


def caption(prompt: str, trigger: str) -> str:
    """A training caption: the render prompt with the persona's trigger word in front."""
    return f"{trigger} person, {prompt}"


@dataclass
class Verdict:
    index: int
    kept: bool
    reason: str = ""  # "" when kept
    score: float | None = None
    detail: str = ""


@dataclass
class FilterReport:
    verdicts: list[Verdict] = field(default_factory=list)
    identity_checked: bool = True

    @property
    def kept(self) -> list[int]:
        return [v.index for v in self.verdicts if v.kept]

    @property
    def rejected(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.kept]

    def as_dict(self) -> dict[str, Any]:
        reasons: dict[str, int] = {}
        for v in self.rejected:
            reasons[v.reason] = reasons.get(v.reason, 0) + 1
        return {
            "identity_checked": self.identity_checked,
            "kept": len(self.kept),
            "rejected": len(self.rejected),
            "rejected_by_reason": reasons,
            "verdicts": [
                {"index": v.index, "kept": v.kept, "reason": v.reason, "score": v.score, "detail": v.detail}
                for v in self.verdicts
            ],
        }


def _thumb(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L").resize((16, 16), Image.Resampling.BILINEAR), dtype=np.float32)


def filter_candidates(
    images: Sequence[Image.Image],
    embedder: Embedder | None,
    reference: np.ndarray | None,
    threshold: float,
) -> FilterReport:
    """Keep the candidates whose face matches ``reference`` (similarity >= ``threshold``), then
    drop near-duplicates of an earlier kept one (same thumbnail, or nearly the same face)."""
    report = FilterReport(identity_checked=embedder is not None and reference is not None)
    kept_thumbs: list[tuple[int, np.ndarray, np.ndarray | None]] = []
    for index, image in enumerate(images):
        score: float | None = None
        face: np.ndarray | None = None
        if report.identity_checked:
            assert embedder is not None and reference is not None
            face = embedder.embed(image)
            if face is None:
                report.verdicts.append(Verdict(index, False, REASON_NO_FACE, None, "no face found"))
                continue
            score = similarity(reference, face, embedder.backend)
            if score < threshold:
                detail = f"identity {score:.3f} < threshold {threshold:.2f}"
                report.verdicts.append(Verdict(index, False, REASON_SCORE, score, detail))
                continue
        thumb = _thumb(image)
        twin = _duplicate_of(thumb, face, kept_thumbs, embedder)
        if twin is not None:
            report.verdicts.append(Verdict(index, False, REASON_DUPLICATE, score, f"near-duplicate of #{twin + 1}"))
            continue
        kept_thumbs.append((index, thumb, face))
        report.verdicts.append(Verdict(index, True, "", score, "ok"))
    return report


def _duplicate_of(
    thumb: np.ndarray,
    face: np.ndarray | None,
    kept: Sequence[tuple[int, np.ndarray, np.ndarray | None]],
    embedder: Embedder | None,
) -> int | None:
    for index, other_thumb, other_face in kept:
        if float(np.abs(thumb - other_thumb).mean()) < DUPLICATE_PIXEL_DISTANCE:
            return index
        if face is not None and other_face is not None and embedder is not None:
            if similarity(face, other_face, embedder.backend) >= DUPLICATE_FACE_SIMILARITY:
                return index
    return None
