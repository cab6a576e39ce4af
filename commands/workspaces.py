"""The workspace of an event and the user's role in it, and the rules about roles.

The front end names the workspace (``Event.workspace``: a Discord guild id or ``dm:<user id>``,
the WeCom corp id; "" for the platform's default, the console's ``local``). The user joins it
as a member on first sight (the only user of a personal workspace is its admin). ``ADMIN_IDS``
are admins everywhere; a platform's own admins (Discord: Manage Server) are admins of their
workspace, and it is remembered so the team's list shows them.
"""

from __future__ import annotations

from typing import Any

from commands.config import ConversationConfig
from commands.context import Ctx
from commands.events import Event
from commands.validation import InputError
from storage.models import User, Workspace, WorkspaceRole
from storage.repository import Store
from storage.workspace_keys import PERSONAL_PREFIX, home_key
from storage.workspaces import KnownContext


def event_key(event: Event) -> tuple[str, bool]:
    """The event's workspace key (its external id on the event's platform) and whether it is personal."""
    if event.workspace:
        key = event.workspace
        personal = key.startswith(PERSONAL_PREFIX)
        if personal and key != f"{PERSONAL_PREFIX}{event.user_id}":
            raise InputError("that is another user's personal workspace")
        return key, personal
    home = home_key(event.platform, event.user_id)
    return home.external_id, home.personal


async def resolve(
    store: Store, config: ConversationConfig, event: Event, user: User, known: KnownContext | None = None
) -> tuple[Workspace, WorkspaceRole]:
    """The event's workspace (made on first use) and the user's role there; ``known`` is what was
    read of them already (the usual case: nothing left to read or write)."""
    key, personal = event_key(event)
    read = known.workspace if known is not None else None
    if read is not None and event.workspace_name in ("", read.name):
        workspace = read
    else:
        workspace = await store.workspace(event.platform, key, event.workspace_name, personal)
    first = WorkspaceRole.ADMIN if personal or event.workspace_admin else WorkspaceRole.MEMBER
    if known is not None and known.role is not None and read is not None and read.id == workspace.id:
        role = known.role
    else:
        role = await store.join_workspace(workspace.id, user.id, first)
    if event.workspace_admin and role != WorkspaceRole.ADMIN:
        await store.set_role(workspace.id, user.id, WorkspaceRole.ADMIN)
        role = WorkspaceRole.ADMIN
    if config.is_admin(event.platform, event.user_id):
        role = WorkspaceRole.ADMIN
    return workspace, role


def check_admin(ctx: Ctx, what: str) -> None:
    if not ctx.is_admin:
        raise InputError(f"only an admin of this workspace can {what} (see /team)")


def check_creator(ctx: Ctx, thing: Any, what: str) -> None:
    """Deleting or training a persona, deleting another member's product: its creator or an admin."""
    if thing.owner_id == ctx.user.id or ctx.is_admin:
        return
    raise InputError(f"only the creator of {what} or an admin of this workspace can do that")
