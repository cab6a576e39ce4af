"""Measuring a persona's identity consistency: N renders in varied scenes, scored against its reference.

``persona-studio eval identity`` and the training report (blend vs the new version, on real
weights) use :func:`evaluate_identity`: the persona is rendered with its adapter (a trained
version or the blend) through the normal render path, without the identity gate's retries, and
each image's largest face is compared with the persona's reference face.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.render.job_render import derive_seed
from engine.training.data import candidate_prompts

if TYPE_CHECKING:
    from engine.render.engine import Engine
    from engine.specs import PersonaSpec


def summarize(scores: list[float | None], threshold: float) -> dict[str, Any]:
    """mean, p10, min and the share at or above ``threshold`` of the scores (no face counts as 0)."""
    values = np.asarray([0.0 if s is None else s for s in scores], dtype=np.float64)
    if values.size == 0:
        return {"renders": 0, "faces": 0, "mean": None, "p10": None, "min": None, "share_above": None}
    return {
        "renders": int(values.size),
        "faces": sum(s is not None for s in scores),
        "mean": round(float(values.mean()), 4),
        "p10": round(float(np.percentile(values, 10)), 4),
        "min": round(float(values.min()), 4),
        "share_above": round(float((values >= threshold).mean()), 4),
        "threshold": threshold,
    }


def evaluate_identity(
    engine: Engine,
    persona: PersonaSpec,
    renders: int,
    *,
    seed: int = 7,
    cancel: threading.Event | None = None,
) -> dict[str, Any]:
    """Render ``renders`` images of ``persona`` in varied scenes and summarise their identity scores.

    ``{"checked": False, ...}`` when the engine has no face embedder or the reference shows no face.
    """
    from engine.specs import JobKind, JobSpec

    spec = JobSpec(job_id="identity-eval", kind=JobKind.GENERATE, persona=persona, seed=seed)
    spec.params = engine.default_params()
    scores: list[float | None] = []
    with engine.job(spec, renders, None, cancel) as job:
        reference = job.reference(persona)
        if reference is None or job.embedder is None:
            return {"checked": False, "reason": "the persona's reference has no face (or no face model)"}
        for i, prompt in enumerate(candidate_prompts(renders, seed)):
            image = job.render(prompt, derive_seed(seed, i, 0), spec.params.width, spec.params.height)
            face = job.embedder.embed(image)
            scores.append(None if face is None else _score(reference, face, job.embedder.backend))
    return {"checked": True, "scores": scores, **summarize(scores, engine.identity_threshold)}


def _score(reference: np.ndarray, face: np.ndarray, backend: str) -> float:
    from engine.render.identity import similarity

    return round(similarity(reference, face, backend), 4)
