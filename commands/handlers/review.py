"""✅ approve and review: ``/approve`` and ``/reject <reason>`` (退回 <原因>).

Review off (the default), the author's (or an admin's) ✅ approves. Review on, the author's ✅
submits the post ("in review") and asks the workspace's reviewers; a reviewer's (or admin's) ✅
approves, ``/reject <reason>`` sends it back to its author, open again. An author cannot approve
their own post while review is on, unless they are an admin. Every step is in the activity log.
"""

from __future__ import annotations

from commands import rules
from commands.context import Ctx
from commands.events import Action, Reply, ReviewRequest
from commands.outputs import turn_images
from commands.ports import Imaging, Stored
from commands.validation import InputError
from storage.activity import ReviewStateError
from storage.models import Thread, ThreadStatus, Turn, TurnStatus, User


def who(user: User) -> str:
    return user.display_name or user.platform_user_id


async def approve(conv: Imaging, ctx: Ctx) -> list[Action]:
    thread, turn = await rules.acted_turn(conv, ctx, owner_only=False)
    rules.check_open(thread)  # a cancelled post stays closed
    if turn.status in (TurnStatus.FAILED, TurnStatus.CANCELLED):
        raise InputError(await rules.unusable(conv, turn, "approve"))
    if turn.status != TurnStatus.DONE:
        raise InputError(
            f"turn #{turn.id} is still rendering, so there is nothing to approve yet;"
            " approve it when its images are there"
        )
    authored = thread.owner_id == ctx.user.id
    if not ctx.workspace.review:
        rules.check_owner(conv, ctx, thread)
    elif authored and not ctx.is_admin:
        return await _submit(conv, ctx, thread, turn)
    elif not ctx.reviews:
        raise InputError("only the post's author submits it; a reviewer or an admin approves it")
    try:
        await conv.store.approve_turn(thread.id, turn.id, ctx.user.id)
    except ReviewStateError as exc:
        raise InputError(str(exc)) from None
    by = "" if authored else f" of post #{thread.id} (by {who(ctx.user)})"
    text = f"✅ Approved turn #{turn.id}{by}. /export downloads the approved images."
    return await _to_post_and_author(conv, ctx, thread, text)


async def _submit(conv: Imaging, ctx: Ctx, thread: Thread, turn: Turn) -> list[Action]:
    try:
        await conv.store.submit_for_review(thread.id, turn.id, ctx.user.id)
    except ReviewStateError as exc:
        raise InputError(str(exc)) from None
    reviewers = [u for u in await conv.store.reviewers(ctx.workspace.id) if u.id != ctx.user.id]
    where = ctx.where_thread(thread)
    if not reviewers:
        text = (
            f"🕒 Post #{thread.id} is in review (turn #{turn.id}), but nobody reviews here yet: an admin gives the"
            " role with /team role <user> reviewer."
        )
        return [ctx.reply(text, where=where)]
    ask = (
        f"👀 Review, please: post #{thread.id} · {thread.title} (turn #{turn.id}) by {who(ctx.user)}."
        " ✅ approves it; request changes with /reject <reason> (退回 <原因>)."
    )
    images = await turn_images(conv.blobs, turn)
    return [
        ctx.reply(f"🕒 Submitted for review: post #{thread.id} is in review (turn #{turn.id}).", where=where),
        ReviewRequest(
            where=where,
            turn_id=turn.id,
            text=ask,
            reviewers=tuple(u.platform_user_id for u in reviewers),
            images=images,
        ),
    ]


async def reject(conv: Stored, ctx: Ctx, *, reason: str | None) -> list[Action]:
    """A reviewer sends the post in review back to its author with a reason; the post is open again.
    Without a reason (the Request changes button) the reviewer is asked for it."""
    thread = await rules.require_thread(conv, ctx)
    if not ctx.reviews:
        raise InputError("only a reviewer or an admin of this workspace can send a post back")
    if thread.status != ThreadStatus.IN_REVIEW:
        raise InputError(f"post #{thread.id} is not in review")
    if not reason:
        if ctx.event.platform not in conv.config.threaded_platforms:
            await conv.store.set_current_thread(ctx.user.id, thread.id)  # the reason goes to this post
        ask = f"What should change in post #{thread.id}? Send /reject <reason> (退回 <原因>)."
        return [ctx.reply(ask, where=ctx.where_thread(thread), private=True)]
    try:
        await conv.store.send_back(thread.id, ctx.user.id, reason)
    except ReviewStateError as exc:
        raise InputError(str(exc)) from None
    text = (
        f"↩️ {who(ctx.user)} requested changes to post #{thread.id}: {reason}\n"
        "The post is open again: edit it, then ✅ to submit it again."
    )
    return await _to_post_and_author(conv, ctx, thread, text)


async def _to_post_and_author(conv: Stored, ctx: Ctx, thread: Thread, text: str) -> list[Reply]:
    """The text in the post; on platforms without threads also to its author, when someone else acted."""
    actions = [ctx.reply(text, where=ctx.where_thread(thread))]
    if thread.owner_id != ctx.user.id and ctx.event.platform not in conv.config.threaded_platforms:
        author = await conv.store.get_user(thread.owner_id)
        actions.append(Reply(where=ctx.where_author(thread, author), text=text))
    return actions
