"""Edits of a post's current images: the plain-text instruction, ``/edit`` (Discord: with a
``region`` option) and ``/tryon`` (试穿).

An instruction may start with words that shape the edit, in any order: ``all:`` or ``#N`` (which
images), ``product=<names>``, a role word for its attached images (``product:`` / ``scene:`` /
``face:``), ``region=<words>`` (区域=) or ``mask:`` (the attached image is the mask). A region edit
changes only the region (engine.render.regions: words -> detector + SAM on the worker, or the mask
image); a mask covering (almost) everything is a normal edit, and the reply says so.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from commands import references as refs
from commands import regions, rules
from commands.context import Ctx
from commands.events import Action, Attachment
from commands.ports import Rendering, Stored
from commands.validation import InputError, check_text
from engine.specs import JobKind, JobSpec, ReferenceRole, ReferenceSpec, RegionSpec
from storage.activity import PostAction
from storage.models import Thread, Turn, TurnKind, TurnStatus


@dataclass
class EditAsk:
    """What one edit asks for, read off the instruction's leading words or a command's options."""

    text: str
    names: list[str] = field(default_factory=list)
    role: str | None = None
    targets: list[int] | None = None  # [] = every image; None = the post's target image
    words: str | None = None
    said_mask: bool = False
    tryon: bool = False


def read_instruction(text: str) -> EditAsk:
    """Peel the leading words (any order) off an instruction."""
    ask = EditAsk(text=check_text(text, "instruction"))
    while True:
        rest = ask.text.strip()
        if rest.lower().startswith(("all:", "all：")):
            ask.targets, rest = [], rest[4:]
        elif match := re.match(r"^#(\d)\s*[:：]?\s*", rest):
            ask.targets, rest = [int(match.group(1)) - 1], rest[match.end() :]
        elif (found := refs.product_prefix(rest))[0]:
            ask.names, rest = ask.names + found[0], found[1]
        elif (role := refs.role_prefix(rest))[0] is not None:
            ask.role, rest = role
        elif (words := regions.region_prefix(rest))[0] is not None:
            ask.words, rest = words
        elif (mask := regions.mask_prefix(rest))[0]:
            ask.said_mask, rest = True, mask[1]
        else:
            break
        ask.text = rest
    ask.text = check_text(ask.text, "instruction")
    return ask


async def edit(
    conv: Rendering, ctx: Ctx, thread: Thread, ask: EditAsk, chosen: Sequence[ReferenceSpec] = ()
) -> list[Action]:
    rules.check_owner(conv, ctx, thread)
    rules.check_open(thread)
    current = await rules.current_turn(conv, thread)
    if current is not None and current.status in (TurnStatus.FAILED, TurnStatus.CANCELLED):
        raise InputError(await rules.unusable(conv, current, "edit"))
    first = await first_images_rendering(conv, thread, current)
    if first is not None:
        count = first  # the edit waits for the post's first images (held until they are done)
    elif current is None or current.status != TurnStatus.DONE or not current.image_keys:
        raise InputError("the first images of this post are not ready yet; wait for them, then send the edit")
    else:
        await rules.check_idle(conv, thread)
        count = len(current.image_keys)
    assert current is not None
    targets = list(range(count)) if ask.targets == [] else ask.targets
    targets = targets or [int((thread.settings or {}).get("target", 0))]
    if any(not 0 <= t < count for t in targets):
        raise InputError(f"this post has {count} image(s); use #1 to #{count}")
    library = await refs.library(conv, ctx.workspace.id, ask.names)
    if ask.tryon and not library and not any(a.role == ReferenceRole.PRODUCT for a in ctx.event.attachments):
        raise InputError("a try-on needs a product: /tryon <product from your library>, or attach its image")
    mask, attachments = regions.split_mask(ctx.event.attachments if not chosen else (), ask.said_mask)
    refs.check_attachments(attachments)
    full = False
    if mask is not None and first is not None:
        raise InputError("the first images are still rendering: send the mask once they are here")
    if mask is not None:
        sizes = [await asyncio.to_thread(_size, conv, current.image_keys[t]) for t in targets]
        full = regions.check_mask(mask, sizes)
    waiting = refs.pending_refs(ctx.user)
    known = refs.from_dicts(thread.references) + library + list(chosen) + waiting
    said = [replace(a, role=a.role or ask.role) for a in attachments]
    refs.check_limit(conv.config.engine_model, known, editing=True, attached=said)
    await rules.check_limits(conv, ctx.user)
    if attachments and ask.role is None and any(a.role is None for a in attachments):
        if mask is not None:
            raise InputError("say what the other image is: start with product:, scene: or face:")
        return await refs.park(conv, ctx, attachments, edit=(thread, ctx.event.text))  # a button picks the role
    attached = [
        ReferenceSpec(role=r or ReferenceRole.SCENE, key=k)
        for r, k in await refs.store_attachments(conv, attachments, ask.role)
    ]
    region = await _region(conv, ask, mask, full)
    edit_refs = refs.dedupe(refs.from_dicts(thread.references) + library + list(chosen) + attached + waiting)
    if waiting:
        ctx.user.settings = await conv.store.update_user_settings(ctx.user.id, {refs.PENDING: []})
    persona = await conv.store.get_persona(thread.persona_id)
    params = conv.params(ctx.user, thread)
    spec = JobSpec(
        job_id=uuid.uuid4().hex,
        kind=JobKind.EDIT,
        user_id=ctx.user.id,
        thread_id=thread.id,
        persona=conv.persona_spec(persona),
        prompt=ask.text,
        context_keys=list(current.image_keys),
        targets=targets,
        wait_for_turn=current.id if first is not None else None,
        seed=conv.seed(ctx.user, thread),
        params=params,
        references=edit_refs,
        region=region,
    )
    where = ctx.where_thread(thread)
    turn_params = params.model_dump() | ({"region": regions.region_params(region)} if region else {})
    turn = dict(
        parent_id=current.id,
        kind=TurnKind.EDIT,
        instruction=ask.text,
        params=turn_params,
        references=refs.as_dicts(edit_refs),
    )
    queued = await conv.submit(ctx, spec, thread=thread, turn=turn, where=where, hold=first is not None)
    await conv.store.log_activity(thread.id, ctx.user.id, PostAction.EDITED, detail=ask.text)
    which = "every image" if len(targets) > 1 else f"image {targets[0] + 1}"
    extra = refs.from_dicts(turn["references"])[len(thread.references or []) :]
    using = f", with {refs.describe(extra)}" if extra else ""
    where_words = f", {regions.describe(turn_params)}" if region else ""
    if full:
        where_words = ", the mask covers almost everything: a normal edit"
    mark = "👕" if ask.tryon else "✏️"
    said = f"{mark} {ask.text} ({which}{where_words}{using})"
    if first is not None:
        queued = replace(queued, text="waiting for the first images")
        said += "\nThe first images are still rendering: this edit starts as soon as they are done."
    return [ctx.reply(said, where=where), queued]


async def first_images_rendering(conv: Stored, thread: Thread, current: Turn | None) -> int | None:
    """The number of the post's first images while they still render (an edit then waits for
    them), else None. One edit waits at a time."""
    if current is None or current.parent_id is not None or current.status != TurnStatus.PENDING:
        return None
    job = await conv.store.job_for_turn(current.id)
    if job is None:
        return None
    if await conv.store.held_jobs_waiting_for(current.id):
        raise InputError("an edit already waits for the first images; send the next one once they are here")
    return int((job.spec or {}).get("count") or 1)


def _size(conv: Rendering, key: str) -> tuple[int, int]:
    info = conv.blobs.info(key)
    if info.width and info.height:
        return info.width, info.height
    image = conv.blobs.open_image(key)
    return image.width, image.height


async def _region(conv: Rendering, ask: EditAsk, mask: Attachment | None, full: bool) -> RegionSpec | None:
    """The edit's region: words, or the stored mask image (a mask covering everything: none)."""
    if mask is not None and not full:
        key = await asyncio.to_thread(conv.blobs.put, mask.data)
        return RegionSpec(mask_key=key, tryon=ask.tryon)
    if ask.words or ask.tryon:
        return RegionSpec(words=ask.words, tryon=ask.tryon)
    return None


async def edit_command(
    conv: Rendering,
    ctx: Ctx,
    *,
    instruction: str,
    region: str | None,
    image: str | None,
    product: str | None,
) -> list[Action]:
    """``/edit <instruction> [region=<words>] [image=N|all] [product=<names>]`` (+ a mask or product image)."""
    thread = await rules.owned_thread(conv, ctx)
    ask = read_instruction(instruction)
    if region:
        ask.words = regions.region_prefix(f"region={region} x")[0]
    ask.names += refs.split_names(product)
    if image:
        ask.targets = _image_choice(image)
    return await edit(conv, ctx, thread, ask)


async def tryon(conv: Rendering, ctx: Ctx, *, product: str | None, region: str | None) -> list[Action]:
    """``/tryon <product> [region=<words>]``: the garment from the library (or the attached product
    image) replaces the clothing region (or the region named), with the garment as a reference."""
    thread = await rules.owned_thread(conv, ctx)
    names = refs.split_names(product)
    ask = EditAsk(text=f"wear {', '.join(names) if names else 'the attached garment'}", names=names, tryon=True)
    if region:
        ask.words = regions.region_prefix(f"region={region} x")[0]
    return await edit(conv, ctx, thread, ask)


def _image_choice(value: str) -> list[int]:
    word = value.strip().lower().lstrip("#")
    if word in ("all", "全部"):
        return []
    if word.isdigit() and 1 <= int(word) <= 9:
        return [int(word) - 1]
    raise InputError(f"image={value} is not valid (expected a number like 2, or all)")
