"""Information and settings: ``/help /history /export /status /settings /threads /thread``."""

from __future__ import annotations

from commands import rules
from commands.context import Ctx
from commands.events import Action, FileOut
from commands.ids import parse_id
from commands.params import parse_settings
from commands.ports import Informing, Stored
from commands.texts import render_activity, render_tree
from commands.validation import InputError
from storage.models import JobStatus


async def help(conv: Informing, ctx: Ctx) -> list[Action]:
    return [ctx.reply(conv.help_text())]


async def history(conv: Stored, ctx: Ctx) -> list[Action]:
    """The turn tree and the activity log, for the post's author, its reviewers and admins."""
    thread = await rules.require_thread(conv, ctx)
    if thread.owner_id != ctx.user.id and not ctx.reviews:
        rules.check_owner(conv, ctx, thread)  # the manifest-like detail (seeds) is for the team's leads
    turns = await conv.store.turns(thread.id)
    text = f"Post #{thread.id}: {thread.prompt}\n" + render_tree(turns, thread.current_turn_id)
    text += "\nActivity:\n" + render_activity(await conv.store.activity(thread.id))
    return [ctx.reply(text, where=ctx.where_thread(thread))]


async def export(conv: Informing, ctx: Ctx) -> list[Action]:
    thread = await rules.owned_thread(conv, ctx)
    approved = await conv.store.approved_turns(thread.id)
    if not approved:
        raise InputError("nothing approved yet: ✅ approve a result first, then /export")
    data = await conv.export_zip(thread)
    text = f"📦 Post #{thread.id}: {len(approved)} approved turn(s) and manifest.json"
    return [FileOut(where=ctx.where_thread(thread), filename=f"post-{thread.id}.zip", data=data, text=text)]


async def status(conv: Informing, ctx: Ctx) -> list[Action]:
    jobs = await conv.store.user_jobs(ctx.user.id)
    if not jobs:
        return [ctx.reply("No jobs running or waiting.", private=True)]
    lines = []
    for job in jobs:
        position = await conv.queue.position(job.id)
        where = f"post #{job.thread_id}" if job.thread_id else "persona"
        state = f"waiting, {position} ahead" if position is not None else str(job.status)
        if job.status == JobStatus.RUNNING:
            state = f"running {job.progress:.0%}"
        lines.append(f"• {job.kind} ({where}): {state}")
    return [ctx.reply("Your jobs:\n" + "\n".join(lines), private=True)]


async def settings(
    conv: Informing,
    ctx: Ctx,
    *,
    scope: str | None,
    steps: int | None,
    guidance: float | None,
    size: str | None,
    seed: str | None,
) -> list[Action]:
    """Per-post settings inside a platform thread (Discord) or with ``post`` first on platforms
    without threads (``/settings post steps=8``); the user's defaults otherwise."""
    thread = None
    if ctx.event.thread_id is not None or scope == "post":
        thread = await rules.owned_thread(conv, ctx)
    given = {"steps": steps, "guidance": guidance, "size": size, "seed": seed}
    changes = {key: value for key, value in given.items() if value is not None}
    parsed = parse_settings(changes, conv.config.engine_model)
    if parsed:
        if thread is not None:
            await conv.store.update_thread_settings(thread.id, parsed)
            thread = await conv.store.get_thread(thread.id)
        else:
            ctx.user.settings = await conv.store.update_user_settings(ctx.user.id, parsed)
    params = conv.params(ctx.user, thread)
    scope = f"post #{thread.id}" if thread is not None else "your defaults"
    seed = (thread.settings if thread else ctx.user.settings or {}).get("seed")
    text = (
        f"Settings for {scope}: steps={params.steps} guidance={params.guidance:g} "
        f"size={params.width}x{params.height} seed={seed if seed is not None else 'random'}"
    )
    return [ctx.reply(text, private=True)]


async def threads(conv: Stored, ctx: Ctx, *, scope: str | None) -> list[Action]:
    """Your posts in this workspace; ``all``: every post of the workspace, with its author."""
    everyone = scope == "all"
    found = await conv.store.list_threads_in(ctx.workspace.id, author_id=None if everyone else ctx.user.id)
    if not found:
        return [ctx.reply("No posts yet. /post <persona> <prompt> starts one.")]
    current = ctx.user.current_thread_id
    members = await conv.store.members(ctx.workspace.id)
    names = {m.user.id: m.user.display_name or m.user.platform_user_id for m in members}
    lines = [
        f"{'▶' if t.id == current else ' '} #{t.id} {t.title} [{t.status}]"
        + (f" · {names.get(t.owner_id, '?')}" if everyone else "")
        for t in found
    ]
    title = "The workspace's posts" if everyone else "Your posts"
    return [ctx.reply(f"{title} (/thread <id> switches):\n" + "\n".join(lines))]


async def thread(conv: Stored, ctx: Ctx, *, id: str) -> list[Action]:
    raw = id
    post_id = parse_id(raw)
    # a missing post and someone else's get the same answer: nothing tells whether #N exists
    shown = raw.lstrip("#").strip()
    shown = f"#{shown}" if len(shown) <= 12 else "with that number"  # never echo a flood back
    not_yours = InputError(f"you have no post {shown} (/threads lists yours)")
    if post_id is None:
        raise not_yours
    found = await conv.store.thread_in(ctx.workspace.id, post_id)
    if found is None or (found.owner_id != ctx.user.id and not ctx.reviews):
        raise not_yours  # reviewers and admins open any post of their workspace (to review it)
    await conv.store.set_current_thread(ctx.user.id, found.id)
    return [ctx.reply(f"Now in post #{found.id}: {found.title}", where=ctx.where_thread(found))]
