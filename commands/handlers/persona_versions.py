"""``/persona train <name> [images=N] [steps=S] [rank=R]`` and ``/persona use <name> v<N>|blend``."""

from __future__ import annotations

import re
import uuid

from commands import rules, workspaces
from commands.context import Ctx
from commands.events import Action
from commands.ports import Rendering, Stored
from commands.training_texts import version_names
from commands.validation import InputError
from engine.specs import REAL_TRAIN_DEFAULTS, JobKind, JobSpec, TrainParams
from storage.job_records import TrainingInProgress
from storage.persona_versions import find_version

_VERSION = re.compile(r"^v?(\d{1,4})$", re.IGNORECASE)


async def train(
    conv: Rendering, ctx: Ctx, *, name: str, images: int | None, steps: int | None, rank: int | None
) -> list[Action]:
    params = TrainParams(images=images, steps=steps, rank=rank)
    persona = await rules.own_persona(conv, ctx, name)
    workspaces.check_creator(ctx, persona, f"persona {persona.name}")
    if persona.status != "ready":
        raise InputError(f"persona {persona.name} is {persona.status}; it can be trained once it is ready")
    work = (images or REAL_TRAIN_DEFAULTS.images) * (steps or REAL_TRAIN_DEFAULTS.steps)
    if work > conv.config.max_train_work:
        raise InputError(
            f"images × steps = {work} is over this installation's limit of {conv.config.max_train_work}: "
            "ask for fewer images or steps"
        )
    for job in await conv.store.user_jobs(ctx.user.id):
        if job.kind == JobKind.TRAIN_PERSONA:
            raise InputError(_already_training(persona.name, job.spec, persona.id))
    await rules.check_limits(conv, ctx.user)
    spec = JobSpec(
        job_id=uuid.uuid4().hex,
        kind=JobKind.TRAIN_PERSONA,
        user_id=ctx.user.id,
        persona=conv.persona_spec(persona),
        seed=persona.seed,
        params=conv.params(ctx.user, None),
        train=params,
    )
    try:  # the database keeps one unfinished training per user (two front ends at once)
        queued = await conv.submit(ctx, spec, thread=None, where=ctx.where_user())
    except TrainingInProgress:
        raise InputError(_already_training(persona.name, {}, None)) from None
    asked = ", ".join(f"{k}={v}" for k, v in params.model_dump(exclude_none=True).items()) or "default settings"
    text = (
        f"Training persona {persona.name} ({asked}): rendering candidates, keeping those that match its face, "
        "then training a LoRA. /cancel stops it."
    )
    return [ctx.reply(text), queued]


def _already_training(name: str, spec: dict, persona_id: int | None) -> str:
    if persona_id is not None and (spec.get("persona") or {}).get("persona_id") == persona_id:
        return f"persona {name} is already training (/cancel stops it)"
    return "one of your personas is already training; one training at a time (/cancel stops it)"


async def use(conv: Stored, ctx: Ctx, *, name: str, version: str) -> list[Action]:
    persona = await rules.own_persona(conv, ctx, name)
    if version.lower() in ("blend", "v0", "0", "混合"):
        await conv.store.set_active_version(persona.id, 0)
        return [ctx.reply(f"{persona.name} now renders with its blend (the LoRA mix).")]
    match = _VERSION.match(version)
    if match is None:
        raise InputError(f"not a version: {version!r}; usage: {ctx.usage}")
    number = int(match.group(1))
    if find_version(persona.versions, number) is None:
        raise InputError(f"{persona.name} has no version v{number}; versions: {version_names(persona)}")
    await conv.store.set_active_version(persona.id, number)
    return [ctx.reply(f"{persona.name} now renders with its trained version v{number}.")]
