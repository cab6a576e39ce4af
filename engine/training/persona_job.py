"""The train_persona job: candidates -> identity filter -> captions -> a persona LoRA version.

1. **Candidates**: ``images`` renders of the persona (its adapter in use) through the normal
   render path, prompts from engine.training.data (varied scenes, outfits, poses, framings), seeds
   ``derive_seed(spec.seed, i, 0)``; stored in the blob store.
2. **Filter**: engine.training.data.filter_candidates with the gate's similarity and threshold.
   None kept: the user's error :class:`engine.errors.NoTrainingCandidates` (not retried: the same
   seed renders the same candidates), and the job's dataset is cleared.
3. **Training**: engine.training.loop.train_lora on the kept images, captions = prompt + trigger word.
4. **Result**: the LoRA file (diffusers format with adapter metadata) in the blob store and the
   report in ``JobResult.training``; the job runner records it as the persona's next version.

Progress is one bar: ``images x render steps`` then ``training steps``; training steps carry
the loss as the event's note. The candidate set is saved (``train/<job id>/dataset``) once it is
filtered, and the LoRA every ``checkpoint_every`` steps (``train/<job id>/checkpoint``), so a run
of the same job after a crash skips the renders and resumes training from the last checkpoint.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engine.errors import JobCancelled, NoTrainingCandidates
from engine.render.job_render import derive_seed
from engine.specs import REAL_TRAIN_DEFAULTS, TINY_TRAIN_DEFAULTS, JobResult, JobSpec, TrainParams
from engine.training.data import (
    REASON_DUPLICATE,
    REASON_NO_FACE,
    REASON_SCORE,
    candidate_prompts,
    caption,
    filter_candidates,
    trigger_word,
)
from engine.training.loop import BlobCheckpoints, Sample, TrainConfig, train_lora

if TYPE_CHECKING:
    import threading

    from engine.render.engine import Engine

log = logging.getLogger(__name__)

#: defaults: (images, steps, rank, checkpoint every) for test-sized and real models (engine.specs)
TINY_DEFAULTS = TINY_TRAIN_DEFAULTS
REAL_DEFAULTS = REAL_TRAIN_DEFAULTS
LEARNING_RATE = 1e-4
#: the most candidate images a training takes (``/persona train images=N``: TrainParams' bound)
MAX_TRAIN_IMAGES: int = next(m.le for m in TrainParams.model_fields["images"].metadata if hasattr(m, "le"))
#: why a candidate was not kept, in the user's words
REJECTED_AS = {
    REASON_NO_FACE: "showed no face",
    REASON_SCORE: "showed a different face",
    REASON_DUPLICATE: "repeated another",
}


def train_config(spec: JobSpec, toy: bool, resolution: int) -> tuple[int, TrainConfig]:
    """Number of candidate images and the training config of ``spec`` (defaults by model size)."""
    params = spec.train or TrainParams()
    images, steps, rank, every = TINY_DEFAULTS if toy else REAL_DEFAULTS
    config = TrainConfig(
        steps=params.steps or steps,
        rank=params.rank or rank,
        lr=LEARNING_RATE,
        resolution=resolution,
        checkpoint_every=params.checkpoint_every or every,
        seed=spec.seed,
    )
    return params.images or images, config


def train_persona(
    engine: Engine,
    spec: JobSpec,
    on_progress: Callable[..., None] | None = None,
    cancel: threading.Event | None = None,
) -> JobResult:
    """Run a train_persona job on ``engine``, holding it (loaded, one job at a time) throughout."""
    with engine.hold():
        return _train(engine, spec, on_progress, cancel)


def _train(
    engine: Engine,
    spec: JobSpec,
    on_progress: Callable[..., None] | None,
    cancel: threading.Event | None,
) -> JobResult:
    from engine.render.persona_lora import persona_lora_bytes
    from engine.training.families import train_family_of, training_pipeline_of

    started = time.perf_counter()
    lp = training_pipeline_of(engine)  # klein: its Base model when ENGINE_TRAIN_MODEL names one
    family = train_family_of(lp)
    resolution = spec.params.width if lp.toy else 1024
    count, config = train_config(spec, lp.toy, resolution)
    render_steps = count * spec.params.steps
    total = render_steps + config.steps
    dataset_store = BlobCheckpoints(engine.blobs, spec.job_id, "dataset")
    checkpoints = BlobCheckpoints(engine.blobs, spec.job_id, "checkpoint")
    try:
        saved = dataset_store.load()
        if saved is None:
            dataset = _candidates(engine, spec, count, total, on_progress, cancel)
            dataset_store.save(json.dumps(dataset).encode())
        else:
            dataset = json.loads(saved)
            log.info("job %s: reusing its %d filtered candidates", spec.job_id, len(dataset["candidates"]))
        kept = [c for c in dataset["candidates"] if c["kept"]]
        if not kept:
            raise nothing_to_train(spec.job_id, dataset)
        samples = [Sample(engine.blobs.open_image(c["key"]).convert("RGB"), c["caption"]) for c in kept]

        def on_step(step: int, steps: int, loss: float) -> None:
            if on_progress is not None:
                on_progress(render_steps + step, total, f"training step {step}/{steps} · loss {loss:.4f}")

        engine.adapters.apply([])
        try:
            outcome = train_lora(
                lp,
                family,
                samples,
                config,
                checkpoints=checkpoints,
                on_step=on_step,
                cancel=cancel.is_set if cancel is not None else None,
            )
        finally:
            engine.adapters.forget_active()
        lora_key = engine.blobs.put(persona_lora_bytes(type(lp.pipe), outcome.state, outcome.metadata))
    except (JobCancelled, NoTrainingCandidates):  # the job ends here: nothing of it stays in storage
        dataset_store.clear()
        checkpoints.clear()
        raise
    report: dict[str, Any] = {
        "lora_key": lora_key,
        "family": family.name,
        "train_model": lp.model,
        "trigger": dataset["trigger"],
        "identity_checked": dataset["filter"]["identity_checked"],
        "filter": dataset["filter"],
        "candidates": dataset["candidates"],
        "kept": len(kept),
        "rejected": len(dataset["candidates"]) - len(kept),
        "steps": config.steps,
        "rank": config.rank,
        "alpha": config.lora_alpha,
        "lr": config.lr,
        "resolution": config.resolution,
        "loss_first": round(outcome.losses[0], 5) if outcome.losses else None,
        "loss_last": round(outcome.losses[-1], 5) if outcome.losses else None,
        "eval_loss_before": round(outcome.eval_before, 5),
        "eval_loss_after": round(outcome.eval_after, 5),
        "resumed_from_step": outcome.resumed_from,
        "seconds_per_step": None if outcome.seconds_per_step is None else round(outcome.seconds_per_step, 4),
        "train_seconds": round(outcome.seconds, 2),
    }
    if not lp.toy and report["identity_checked"]:
        report["identity"] = _compare(engine, spec, lora_key, count, cancel)
    dataset_store.clear()
    checkpoints.clear()
    report["seconds"] = round(time.perf_counter() - started, 2)
    return JobResult(
        image_keys=[c["key"] for c in kept],
        seeds=[c["seed"] for c in kept],
        training=report,
        seconds=report["seconds"],
    )


def nothing_to_train(job_id: str, dataset: dict[str, Any]) -> NoTrainingCandidates:
    """The user's error of a dataset that kept no candidate: what happened, why in plain words and
    what to do (the log gets each candidate's verdict)."""
    candidates = dataset["candidates"]
    checked = len(candidates)
    by_reason: dict[str, int] = dataset["filter"]["rejected_by_reason"]
    why = ", ".join(f"{n} {REJECTED_AS.get(reason, reason)}" for reason, n in sorted(by_reason.items()))
    if checked < MAX_TRAIN_IMAGES:  # a training's seed is its persona's: more images add new renders
        more = min(2 * checked, MAX_TRAIN_IMAGES)
        advice = (
            "the same settings render the same images again, so train it with more images "
            f"(images={more}) to add new ones"
        )
    else:
        advice = f"{MAX_TRAIN_IMAGES} images is the most a training takes, so keep using the persona as it is"
    message = (
        f"none of the {checked} images rendered for the training matched the persona's face ({why}), so there "
        f"was nothing to train on; {advice}"
    )
    detail = [f"#{i + 1} {c['reason']}: {c['detail']}" for i, c in enumerate(candidates)]
    log.info("job %s: no candidate kept (%s): %s", job_id, by_reason, "; ".join(detail))
    return NoTrainingCandidates(message, checked=checked, rejected_by_reason=by_reason, detail=detail)


def _candidates(
    engine: Engine,
    spec: JobSpec,
    count: int,
    total: int,
    on_progress: Callable[..., None] | None,
    cancel: threading.Event | None,
) -> dict[str, Any]:
    """Render, store and filter the candidates; the dataset as JSON-ready data."""
    trigger = trigger_word(spec.persona.persona_id)
    prompts = candidate_prompts(count, spec.seed)

    def progress(step: int, _total: int) -> None:
        if on_progress is not None:
            on_progress(step, total, "rendering candidates")

    images, keys, seeds = [], [], []
    with engine.job(spec, count, progress, cancel) as job:
        reference = job.reference(spec.persona)
        for i, prompt in enumerate(prompts):
            seed = derive_seed(spec.seed, i, 0)
            image = job.render(prompt, seed, spec.params.width, spec.params.height)
            images.append(image)
            keys.append(job.store(image))
            seeds.append(seed)
        keys = job.settle(JobResult(image_keys=keys)).image_keys  # the dataset keeps real blob keys
        report = filter_candidates(images, job.embedder, reference, engine.identity_threshold)
    verdicts = report.verdicts
    candidates = [
        {
            "key": keys[v.index],
            "seed": seeds[v.index],
            "prompt": prompts[v.index],
            "caption": caption(prompts[v.index], trigger),
            "kept": v.kept,
            "reason": v.reason,
            "score": None if v.score is None else round(v.score, 4),
            "detail": v.detail,
        }
        for v in sorted(verdicts, key=lambda v: v.index)
    ]
    return {"trigger": trigger, "candidates": candidates, "filter": report.as_dict()}


def _compare(
    engine: Engine, spec: JobSpec, lora_key: str, renders: int, cancel: threading.Event | None
) -> dict[str, Any]:
    """Identity scores of the persona as it was (blend or older version) and with the new version."""
    from engine.training.evaluation import evaluate_identity

    before = evaluate_identity(engine, spec.persona, renders, cancel=cancel)
    after_persona = spec.persona.model_copy(update={"version": -1, "version_lora_key": lora_key})
    after = evaluate_identity(engine, after_persona, renders, cancel=cancel)
    strip = ("scores",)
    return {
        "before": {k: v for k, v in before.items() if k not in strip},
        "after": {k: v for k, v in after.items() if k not in strip},
    }
