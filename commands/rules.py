"""The rules every command follows, in one place: who may act on a post (its author, admins),
per-user job limits, open and idle posts, and the lookups that apply them. Every lookup stays
inside the event's workspace: a post, result or persona of another workspace is not found."""

from __future__ import annotations

from commands.context import Ctx
from commands.ids import parse_id
from commands.ports import Stored
from commands.validation import InputError
from storage.models import Persona, Thread, ThreadStatus, Turn, TurnStatus, User


def check_owner(conv: Stored, ctx: Ctx, thread: Thread) -> None:
    if thread.owner_id == ctx.user.id or ctx.is_admin:
        return
    raise InputError("only the author of this post (or an admin) can change it. Start your own with /post.")


async def check_limits(conv: Stored, user: User) -> None:
    count = await conv.store.unfinished_job_count(user.id)
    running, waiting = conv.config.max_running_jobs, conv.config.max_waiting_jobs
    if count >= running + waiting:
        raise InputError(
            f"you have {count} jobs running or waiting (limit: {running} running "
            f"+ {waiting} waiting). Wait for one to finish or ❌ cancel one."
        )


async def check_idle(conv: Stored, thread: Thread) -> None:
    if await conv.store.thread_jobs(thread.id):
        raise InputError("this post is still rendering; wait for the result (or ❌ cancel) before the next edit")


def check_open(thread: Thread) -> None:
    if thread.status == ThreadStatus.CANCELLED:
        raise InputError("this post is closed; start a new one with /post")


async def thread_of(conv: Stored, ctx: Ctx) -> Thread | None:
    """The post the event is about: the result it acts on, its platform thread, or the user's
    current post."""
    if ctx.event.turn_id is not None:
        turn = await turn_named(conv, ctx, ctx.event.turn_id)
        return await conv.store.get_thread(turn.thread_id)
    if ctx.event.thread_id is not None:
        found = await conv.store.find_thread(ctx.event.platform, ctx.event.thread_id)
        return found if found is not None and found.workspace_id == ctx.workspace.id else None
    if ctx.event.platform in conv.config.threaded_platforms:
        return None
    if ctx.user.current_thread_id is None:
        return None
    return await conv.store.thread_in(ctx.workspace.id, ctx.user.current_thread_id)


async def turn_named(conv: Stored, ctx: Ctx, turn_id: int) -> Turn:
    """A turn of a post of the event's workspace (another workspace's is "no longer exists" too)."""
    if parse_id(turn_id) is None:  # out of the column's range: no such turn, and no query
        raise InputError("that result no longer exists")
    try:
        turn = await conv.store.get_turn(turn_id)
    except LookupError:
        raise InputError("that result no longer exists") from None
    if await conv.store.thread_in(ctx.workspace.id, turn.thread_id) is None:
        raise InputError("that result no longer exists")
    return turn


async def require_thread(conv: Stored, ctx: Ctx) -> Thread:
    thread = await thread_of(conv, ctx)
    if thread is None:
        raise InputError("use this inside a post (open one with /post <persona> <prompt>)")
    return thread


async def owned_thread(conv: Stored, ctx: Ctx) -> Thread:
    thread = await require_thread(conv, ctx)
    check_owner(conv, ctx, thread)
    return thread


async def current_turn(conv: Stored, thread: Thread) -> Turn | None:
    if thread.current_turn_id is not None:
        return await conv.store.get_turn(thread.current_turn_id)
    turns = await conv.store.turns(thread.id)
    return turns[0] if turns else None


async def acted_turn(conv: Stored, ctx: Ctx, *, owner_only: bool = True) -> tuple[Thread, Turn]:
    """The turn a reaction/button/command acts on: the one it names, else the current turn.
    ``owner_only``: the post's author or an admin (else the caller checks who may)."""
    if ctx.event.turn_id is not None:
        turn = await turn_named(conv, ctx, ctx.event.turn_id)
        thread = await conv.store.get_thread(turn.thread_id)
        if ctx.event.thread_id is not None and thread.thread_id not in (None, ctx.event.thread_id):
            raise InputError("that result belongs to another post")
        if owner_only:
            check_owner(conv, ctx, thread)
        return thread, turn
    thread = await owned_thread(conv, ctx) if owner_only else await require_thread(conv, ctx)
    turn = await current_turn(conv, thread)
    if turn is None:
        raise InputError("this post has no result yet")
    return thread, turn


async def own_persona(conv: Stored, ctx: Ctx, name: str) -> Persona:
    """A persona of the event's workspace, by name (any member uses it)."""
    if not name:
        raise InputError("name the persona (see /persona list)")
    persona = await conv.store.find_persona_in(ctx.workspace.id, name)
    if persona is None:
        names = ", ".join(p.name for p in await conv.store.list_personas_in(ctx.workspace.id)) or "none yet"
        raise InputError(f"there is no persona named {name!r} here (this workspace's: {names})")
    return persona


async def unusable(conv: Stored, turn: Turn, wanted: str) -> str:
    """Why a failed or cancelled turn cannot be approved or edited, and what to do instead."""
    job = await conv.store.job_for_turn(turn.id)
    what = "failed" if turn.status == TurnStatus.FAILED else "was cancelled"
    reason = f" ({job.error})" if job is not None and job.error and turn.status == TurnStatus.FAILED else ""
    return f"turn #{turn.id} {what}{reason}, so there is nothing to {wanted}; 🔁 /regen renders it again"
