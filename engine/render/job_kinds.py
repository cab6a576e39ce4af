"""The job kinds the Engine runs, one function each, on a :class:`~engine.render.job_render.JobRender`.

* :func:`create_persona`: render a portrait, store it and its face embedding (``None`` when no
  face shows after ``max_tries`` renders); a persona from a consented photo (``persona.photo_key``)
  renders nothing: the photo is its portrait and its largest face its embedding.
* :func:`generate`: ``count`` images of a post. The first is text-to-image with the persona mix
  (or a Kontext edit of a scene image given as ``context_keys[0]``); the others are Kontext
  variations of the first, so scene and identity carry over. They share prompt and context, so
  their first candidates render as one batch (up to ``job.max_batch``; per-image seeds, the same
  images as one by one); a candidate the identity gate rejects is retried alone.
* :func:`edit`: the instruction applied to ``context_keys[i]`` for each ``i`` in ``targets``; the
  result's ``image_keys`` is the post's whole image list with the targeted images replaced. For
  edits, ``seeds``, ``identity_scores``, ``identity_notes`` and ``tries`` follow ``targets`` order.

The job's references (product, scene, face) join each render as its engine family takes them
(engine.render.references). Every wanted image passes the identity gate (engine.render.identity).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.errors import PhotoHasNoFace
from engine.render import references
from engine.render.job_render import JobRender, derive_seed
from engine.specs import JobResult

if TYPE_CHECKING:
    from PIL import Image

    from engine.render.identity import GateResult

_ARCHETYPE_LOOKS = {
    "sweet": "a sweet, warm smile and soft friendly eyes",
    "elegant": "an elegant, poised expression and refined features",
    "boss": "a confident, self-assured boss expression and a direct gaze",
    "puppy": "playful puppy-dog eyes and a cheerful, youthful look",
}


def portrait_prompt(archetype: str) -> str:
    look = _ARCHETYPE_LOOKS.get(archetype, f"a {archetype.replace('_', ' ')} look")
    return (
        f"close-up studio portrait photo of a young adult with {look}, head and shoulders, "
        "facing the camera, soft even lighting, plain light background, sharp focus on the face"
    )


def variation_prompt(prompt: str) -> str:
    return f"{prompt}. Keep the same person, face, outfit and scene; show a different pose and camera angle."


def edit_prompt(instruction: str) -> str:
    return f"{instruction.strip()}. Keep the person's face and identity unchanged."


def create_from_photo(job: JobRender) -> JobResult:
    spec = job.spec
    key = spec.persona.photo_key
    assert key is not None
    if job.embedder is None:
        raise PhotoHasNoFace("a persona from a photo needs the engine's face embedder, and it has none")
    embedding = job.embedder.embed(job.image(key))
    if embedding is None:
        raise PhotoHasNoFace("no face found in the photo: send a clear photo of one person facing the camera")
    return JobResult(
        image_keys=[key],
        seeds=[spec.seed],
        identity_scores=[None],
        identity_notes=["ok"],
        tries=[0],
        reference_key=key,
        embedding=[float(v) for v in embedding],
    )


def create_persona(job: JobRender) -> JobResult:
    spec = job.spec
    if spec.persona.photo_key is not None:
        return create_from_photo(job)
    prompt = spec.prompt or portrait_prompt(spec.persona.archetype)
    width, height = job.params.width, job.params.height
    image, seed, embedding, tries = None, spec.seed, None, 0
    for attempt in range(job.params.max_tries):
        if attempt:
            job.progress.grow()
        seed = derive_seed(spec.seed, 0, attempt)
        image = job.render(prompt, seed, width, height)
        tries += 1
        embedding = job.embedder.embed(image) if job.embedder is not None else None
        if embedding is not None:
            break
    assert image is not None
    key = job.store(image)
    return JobResult(
        image_keys=[key],
        seeds=[seed],
        identity_scores=[None],
        identity_notes=["ok" if embedding is not None else "no face found"],
        tries=[tries],
        reference_key=key,
        embedding=None if embedding is None else [float(v) for v in embedding],
    )


def generate(job: JobRender) -> JobResult:
    spec = job.spec
    family = job.pipeline.family
    first = references.first_image_inputs(spec, family)
    scene = references.scene_key(spec)
    if scene is not None:
        width, height = job.size_like(scene)
    else:
        width, height = job.params.width, job.params.height
    reference = job.reference(spec.persona)
    gate = job.gate(reference, spec.prompt, 0, width, height, first.main, first.extra)
    first_key = job.store(gate.best.image)
    results = [(first_key, gate)]
    more = references.variation_inputs(spec, family, first_key)
    prompt = variation_prompt(spec.prompt)
    # the variations share prompt and context: their first candidates render in batches
    indexes = list(range(1, spec.count))
    firsts: dict[int, Image.Image] = {}
    size = max(1, job.max_batch)
    for chunk in (indexes[i : i + size] for i in range(0, len(indexes), size)):
        if len(chunk) > 1:
            seeds = [derive_seed(spec.seed, index, 0) for index in chunk]
            images = job.render_batch(prompt, seeds, width, height, more.main, more.extra)
            firsts.update(zip(chunk, images, strict=True))
    for index in indexes:
        gate = job.gate(reference, prompt, index, width, height, more.main, more.extra, first=firsts.get(index))
        results.append((job.store(gate.best.image), gate))
    return _result([key for key, _ in results], [g for _, g in results])


def edit(job: JobRender) -> JobResult:
    spec = job.spec
    if not spec.context_keys:
        raise ValueError("an edit needs the post's current images in context_keys")
    if not spec.targets:
        raise ValueError("an edit needs at least one target image")
    bad = [i for i in spec.targets if not 0 <= i < len(spec.context_keys)]
    if bad:
        raise ValueError(f"edit targets {bad} out of range: the post has {len(spec.context_keys)} images")
    if spec.region is not None:
        from engine.render.regions.job_region import region_edit

        keys, region_gates, full = region_edit(job, edit_prompt(spec.prompt))
        result = _result(keys, region_gates)
        result.region_full = full
        return result
    references.check_job(spec, job.pipeline.family, edit=True)
    reference = job.reference(spec.persona)
    keys = list(spec.context_keys)
    gates = []
    for index in spec.targets:
        width, height = job.size_like(keys[index])
        inputs = references.edit_inputs(spec, job.pipeline.family, keys[index])
        gate = job.gate(reference, edit_prompt(spec.prompt), index, width, height, inputs.main, inputs.extra)
        keys[index] = job.store(gate.best.image)
        gates.append(gate)
    return _result(keys, gates)


def _result(keys: list[str], gates: list[GateResult]) -> JobResult:
    return JobResult(
        image_keys=keys,
        seeds=[g.best.seed for g in gates],
        identity_scores=[None if g.best.score is None else round(g.best.score, 4) for g in gates],
        identity_notes=[g.best.note for g in gates],
        tries=[g.tries for g in gates],
    )
