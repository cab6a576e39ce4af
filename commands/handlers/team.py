"""``/team`` (团队): the workspace, its members with their roles, review on/off; ``/team role
<user> admin|reviewer|member`` (团队 角色) and ``/team review on|off`` (团队 审核 开/关), admins only."""

from __future__ import annotations

from commands.context import Ctx
from commands.events import Action
from commands.handlers.review import who
from commands.ports import Stored
from commands.validation import InputError
from commands.workspaces import check_admin
from storage.models import User, WorkspaceRole

ROLE_WORDS = {
    "admin": "admin",
    "管理员": "admin",
    "reviewer": "reviewer",
    "审核员": "reviewer",
    "member": "member",
    "成员": "member",
}
SWITCH_WORDS = {"on": "on", "开": "on", "off": "off", "关": "off"}


async def show(conv: Stored, ctx: Ctx) -> list[Action]:
    workspace = ctx.workspace
    members = await conv.store.members(workspace.id)
    lines = [f"• {who(m.user)} ({m.user.platform_user_id}): {m.role}" for m in members]
    review = "on — an author's ✅ submits a post, a reviewer's ✅ approves it" if workspace.review else "off"
    title = workspace.name or workspace.external_id
    text = f"Workspace {title} · you: {ctx.role}\nReview: {review}\nMembers:\n" + "\n".join(lines)
    return [ctx.reply(text)]


async def role(conv: Stored, ctx: Ctx, *, user: str, role: str) -> list[Action]:
    check_admin(ctx, "give roles")
    target = await member_named(conv, ctx, user)
    await conv.store.set_role(ctx.workspace.id, target.id, WorkspaceRole(role))
    return [ctx.reply(f"{who(target)} is now {role} of this workspace.")]


async def review(conv: Stored, ctx: Ctx, *, switch: str) -> list[Action]:
    check_admin(ctx, "turn review on or off")
    await conv.store.set_review(ctx.workspace.id, switch == "on")
    if switch == "on":
        return [ctx.reply("Review is on: an author's ✅ submits a post for review; a reviewer's ✅ approves it.")]
    return [ctx.reply("Review is off: an author's ✅ approves their own post.")]


async def member_named(conv: Stored, ctx: Ctx, word: str) -> User:
    """A member by platform id, Discord mention (``<@id>``) or display name. On Discord a server
    member who has not used the bot yet is named by mention or id."""
    wanted = word.strip()
    if wanted.startswith("<@") and wanted.endswith(">"):
        wanted = wanted[2:-1].lstrip("!")
    members = await conv.store.members(ctx.workspace.id)
    for member in members:
        if member.user.platform_user_id == wanted:
            return member.user
    named = [m.user for m in members if (m.user.display_name or "").casefold() == wanted.casefold()]
    if len(named) == 1:
        return named[0]
    if ctx.event.platform == "discord" and wanted.isdigit() and not ctx.workspace.personal:
        return await conv.store.user(ctx.event.platform, wanted)
    names = ", ".join(who(m.user) for m in members) or "none yet"
    raise InputError(f"no member {word!r} in this workspace (members: {names})")
