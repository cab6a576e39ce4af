"""Images sent without a post or edit around them, and the role a user picks for them.

An image sent alone waits (in the user's settings) for the next post or edit; when its front end
did not say its role, a :class:`~commands.events.ChooseRole` asks, and the click is the
``reference`` command. An edit whose images have no role waits for that click too.
"""

from __future__ import annotations

from commands import references as refs
from commands.context import Ctx
from commands.events import Action
from commands.handlers import posts
from commands.ports import Rendering
from commands.validation import InputError
from engine.specs import ReferenceRole, ReferenceSpec


async def choose(conv: Rendering, ctx: Ctx, *, role: ReferenceRole, key: str) -> list[Action]:
    """``reference``: the role picked for a waiting image (a button on :class:`ChooseRole`)."""
    rows = refs.pending(ctx.user)
    hit = [row for row in rows if key and key in (row.get("batch"), row.get("key"))]
    if not hit:
        raise InputError("that image is no longer waiting (it was used already); send it again")
    for row in hit:
        row["role"] = role
    waiting = (ctx.user.settings or {}).get(refs.PENDING_EDIT) or {}
    if waiting.get("batch") == key:
        chosen = [ReferenceSpec(role=role, key=row["key"]) for row in hit]
        rest = [row for row in rows if row not in hit]
        ctx.user.settings = await conv.store.update_user_settings(
            ctx.user.id, {refs.PENDING: rest, refs.PENDING_EDIT: None}
        )
        thread = await conv.store.get_thread(int(waiting["thread"]))
        return await posts.edit(conv, ctx, thread, str(waiting["text"]), chosen)
    ctx.user.settings = await conv.store.update_user_settings(ctx.user.id, {refs.PENDING: rows})
    hint = (
        " To keep it in your library: /product add <name> (商品 添加 <名字>)." if role == ReferenceRole.PRODUCT else ""
    )
    return [ctx.reply(f"Got it: {refs.ROLE_LABELS[role]} image. It goes into your next post or edit.{hint}")]
