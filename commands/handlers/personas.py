"""``/persona create | create-from-photo | list | show | delete`` (``train`` and ``use``:
commands.handlers.persona_versions); one handler per row of the command table."""

from __future__ import annotations

import random
import uuid

from commands import references as refs
from commands import rules, workspaces
from commands.context import Ctx
from commands.events import Action, Images
from commands.names import check_name
from commands.ports import Creating, Imaging, Rendering, Stored
from commands.training_texts import versions_text
from commands.validation import InputError
from engine.specs import JobKind, JobSpec, PersonaSpec, ReferenceRole, ReferenceSpec, default_params
from storage.repository import DuplicateName

PET_NAMES = ("Mia", "Luna", "Yuki", "Nova", "Aria", "Coco", "Lily", "Ruby", "Iris", "Jade", "Kiki", "Momo")
#: the archetype recorded for personas made from a photo
PHOTO_ARCHETYPE = "photo"


async def create(conv: Creating, ctx: Ctx, *, archetype: str, name: str | None) -> list[Action]:
    archetype = archetype.lower()
    archetypes = await conv.archetypes()
    if archetype not in archetypes:
        raise InputError(f"unknown archetype {archetype!r}; choose one of: {', '.join(archetypes)}")
    if not name:
        name = await _free_name(conv, ctx.workspace.id)
    name = check_name(name, "persona")
    await rules.check_limits(conv, ctx.user)
    seed = random.randrange(2**31)
    try:
        created = await conv.store.create_persona(ctx.user.id, name, archetype, [], seed, workspace_id=ctx.workspace.id)
    except DuplicateName as exc:
        raise InputError(str(exc)) from None
    spec = JobSpec(
        job_id=uuid.uuid4().hex,
        kind=JobKind.CREATE_PERSONA,
        user_id=ctx.user.id,
        persona=PersonaSpec(persona_id=created.id, archetype=archetype, seed=seed),
        seed=seed,
        params=default_params(conv.config.engine_model),
    )
    queued = await conv.submit(ctx, spec, thread=None, where=ctx.where_user())
    return [
        ctx.reply(f"Creating persona {name} ({archetype})… I'll post the reference portrait when it's ready."),
        queued,
    ]


async def create_from_photo(conv: Rendering, ctx: Ctx, *, name: str, consent: str | None) -> list[Action]:
    """A persona whose face is a real person's, from a photo given with their consent."""
    if not conv.config.allow_photo_personas:
        raise InputError("creating personas from photos is turned off here (ALLOW_PHOTO_PERSONAS=false)")
    if (consent or "").lower() not in ("yes", "是"):
        raise InputError(
            "a persona from a photo needs the pictured person's consent: add consent=yes if you have it "
            "(/persona create-from-photo <name> consent=yes with the face image)"
        )
    name = check_name(name or "", "persona")
    attachments = ctx.event.attachments
    if len(attachments) > 1:
        raise InputError("attach one photo of the face")
    faces = [row for row in refs.pending(ctx.user) if row.get("role") in (ReferenceRole.FACE, None)]
    if not attachments and not faces:
        raise InputError("attach a photo of the face (console: @face=path; WeCom: send it, then choose 人脸)")
    if attachments:
        refs.check_attachments(attachments)
    await rules.check_limits(conv, ctx.user)
    key = (await refs.store_attachments(conv, attachments))[0][1] if attachments else faces[-1]["key"]
    seed = random.randrange(2**31)
    try:
        created = await conv.store.create_persona(
            ctx.user.id, name, PHOTO_ARCHETYPE, [], seed, photo_key=key, workspace_id=ctx.workspace.id
        )
    except DuplicateName as exc:
        raise InputError(str(exc)) from None
    if not attachments:  # the waiting photo is this persona's now, not the next post's
        rest = [row for row in refs.pending(ctx.user) if row["key"] != key]
        ctx.user.settings = await conv.store.update_user_settings(ctx.user.id, {refs.PENDING: rest})
    spec = JobSpec(
        job_id=uuid.uuid4().hex,
        kind=JobKind.CREATE_PERSONA,
        user_id=ctx.user.id,
        persona=PersonaSpec(persona_id=created.id, archetype=PHOTO_ARCHETYPE, seed=seed, photo_key=key),
        seed=seed,
        params=default_params(conv.config.engine_model),
        references=[ReferenceSpec(role=ReferenceRole.FACE, key=key)],
    )
    queued = await conv.submit(ctx, spec, thread=None, where=ctx.where_user())
    return [ctx.reply(f"Creating persona {name} from the photo… I'll confirm when its face is read."), queued]


async def list_personas(conv: Stored, ctx: Ctx) -> list[Action]:
    found = await conv.store.list_personas_in(ctx.workspace.id)
    if not found:
        return [ctx.reply("No personas here yet. Create one: /persona create <archetype> [name]")]
    lines = [f"• {p.name} — {p.archetype} ({p.status})" for p in found]
    return [ctx.reply("This workspace's personas:\n" + "\n".join(lines))]


async def delete(conv: Stored, ctx: Ctx, *, name: str) -> list[Action]:
    found = await rules.own_persona(conv, ctx, name)
    workspaces.check_creator(ctx, found, f"persona {found.name}")
    await conv.store.delete_persona(found.id)
    return [ctx.reply(f"Persona {found.name} deleted. Its posts stay in their threads.")]


async def show(conv: Imaging, ctx: Ctx, *, name: str) -> list[Action]:
    found = await rules.own_persona(conv, ctx, name)
    mix = "\n".join(f"  {lora} × {weight:.3f}" for lora, weight in found.lora_mix) or (
        "  (none: from a consented photo)" if found.photo_key else "  (being drawn)"
    )
    text = f"{found.name} — {found.archetype}, seed {found.seed}, {found.status}\nLoRA mix:\n{mix}"
    text += "\n" + versions_text(found)
    images = (await conv.image(found.reference_key, f"persona-{found.name}.png"),) if found.reference_key else ()
    return [Images(where=ctx.where_user(), text=text, images=images)]


async def _free_name(conv: Stored, workspace_id: int) -> str:
    taken = {p.name.lower() for p in await conv.store.list_personas_in(workspace_id)}
    for name in PET_NAMES:
        if name.lower() not in taken:
            return name
    return f"Persona-{len(taken) + 1}"
