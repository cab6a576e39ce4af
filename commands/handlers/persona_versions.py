"""``/persona train <name> [images=N] [steps=S] [rank=R]`` and ``/persona use <name> v<N>|blend``."""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Any

from commands import rules
from commands.context import Ctx
from commands.events import Action
from commands.training_texts import version_names
from commands.validation import InputError
from engine.specs import JobKind, JobSpec, TrainParams
from storage.persona_versions import find_version

if TYPE_CHECKING:
    from commands.conversation import Conversation

TRAIN_USAGE = "usage: /persona train <name> [images=N] [steps=S] [rank=R]"
USE_USAGE = "usage: /persona use <name> v<N>|blend"
TRAIN_OPTIONS = ("images", "steps", "rank")
_VERSION = re.compile(r"^v?(\d{1,4})$", re.IGNORECASE)


def split_words(opts: dict[str, Any], rest: list[str]) -> tuple[str, dict[str, str]]:
    """The persona name and the ``key=value`` words, wherever they stand after the subcommand."""
    options = {k: str(v) for k, v in opts.items() if k in TRAIN_OPTIONS and v is not None}
    name_words = []
    for word in rest:
        key, sep, value = word.partition("=")
        if sep and key.isidentifier():
            options[key.lower()] = value
        else:
            name_words.append(word)
    return str(opts.get("name") or " ".join(name_words)).strip(), options


def train_params(options: dict[str, str]) -> TrainParams:
    unknown = sorted(set(options) - set(TRAIN_OPTIONS))
    if unknown:
        raise InputError(f"unknown option {unknown[0]!r}; {TRAIN_USAGE}")
    values: dict[str, int] = {}
    for key, raw in options.items():
        try:
            values[key] = int(raw)
        except ValueError:
            raise InputError(f"{key} must be a whole number (got {raw!r}); {TRAIN_USAGE}") from None
    limits = {name: TrainParams.model_fields[name].metadata for name in TRAIN_OPTIONS}
    for key, value in values.items():
        low = next(r.ge for r in limits[key] if hasattr(r, "ge"))
        high = next(r.le for r in limits[key] if hasattr(r, "le"))
        if not low <= value <= high:
            raise InputError(f"{key} must be {low}-{high} (got {value})")
    return TrainParams(**values)


async def train(conv: Conversation, ctx: Ctx, opts: dict[str, Any], rest: list[str]) -> list[Action]:
    name, options = split_words(opts, rest)
    if not name:
        raise InputError(TRAIN_USAGE)
    params = train_params(options)
    persona = await rules.own_persona(conv, ctx, name)
    if persona.status != "ready":
        raise InputError(f"persona {persona.name} is {persona.status}; it can be trained once it is ready")
    for job in await conv.store.user_jobs(ctx.user.id):
        if job.kind == JobKind.TRAIN_PERSONA and (job.spec.get("persona") or {}).get("persona_id") == persona.id:
            raise InputError(f"persona {persona.name} is already training (/cancel stops it)")
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
    queued = await conv.submit(ctx, spec, thread=None, where=ctx.where_user())
    asked = ", ".join(f"{k}={v}" for k, v in params.model_dump(exclude_none=True).items()) or "default settings"
    text = (
        f"Training persona {persona.name} ({asked}): rendering candidates, keeping those that match its face, "
        "then training a LoRA. /cancel stops it."
    )
    return [ctx.reply(text), queued]


async def use(conv: Conversation, ctx: Ctx, opts: dict[str, Any], rest: list[str]) -> list[Action]:
    version_word = str(opts.get("version") or (rest[-1] if len(rest) >= 2 else "")).strip()
    name = str(opts.get("name") or " ".join(rest[:-1] if not opts.get("version") else rest)).strip()
    if not name or not version_word:
        raise InputError(USE_USAGE)
    persona = await rules.own_persona(conv, ctx, name)
    if version_word.lower() in ("blend", "v0", "0", "混合"):
        await conv.store.set_active_version(persona.id, 0)
        return [ctx.reply(f"{persona.name} now renders with its blend (the LoRA mix).")]
    match = _VERSION.match(version_word)
    if match is None:
        raise InputError(f"not a version: {version_word!r}; {USE_USAGE}")
    number = int(match.group(1))
    if find_version(persona.versions, number) is None:
        raise InputError(f"{persona.name} has no version v{number}; versions: {version_names(persona)}")
    await conv.store.set_active_version(persona.id, number)
    return [ctx.reply(f"{persona.name} now renders with its trained version v{number}.")]
