"""Pure translation between Discord objects and the commands layer's terms.

Channel and thread ids, result buttons' custom ids, mentions stripped from an instruction, and
uploads read into :class:`commands.events.Attachment` at once (Discord CDN links expire).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import discord

from commands.events import Attachment, Button, Event, EventKind
from commands.validation import MAX_IMAGE_BYTES

PLATFORM = "discord"
#: Reference images per event (FLUX.2 [klein] conditions on at most 4); more are refused before any download.
MAX_ATTACHMENTS = 4
CUSTOM_ID_TEMPLATE = r"persona:(?P<action>approve|regen|undo|cancel):(?P<turn>[0-9]{1,19})"
_CUSTOM_ID = re.compile(CUSTOM_ID_TEMPLATE)
#: a role button under a role question: the role and the blob key of the images it is for
ROLE_ID_TEMPLATE = r"persona:ref:(?P<role>product|scene|face):(?P<key>[0-9a-f]{64})"
#: Approve / Request changes under a review request: the action (a command) and the turn
REVIEW_ID_TEMPLATE = r"persona:review:(?P<action>approve|reject):(?P<turn>[0-9]{1,19})"


class UserFacingError(Exception):
    """Something the user can fix (an attachment that cannot be read); the text says what to do."""


def channel_ids(channel: object) -> tuple[int | None, int | None]:
    """(channel_id, thread_id) of a Discord channel: a thread reports its parent and itself."""
    if isinstance(channel, discord.Thread):
        return channel.parent_id, channel.id
    channel_id = getattr(channel, "id", None)
    return (int(channel_id) if channel_id is not None else None), None


def custom_id(button: Button, turn_id: int) -> str:
    return f"persona:{button.value}:{turn_id}"


def parse_custom_id(value: str) -> tuple[Button, int] | None:
    match = _CUSTOM_ID.fullmatch(value)
    if match is None:
        return None
    return Button(match["action"]), int(match["turn"])


def review_id(action: str, turn_id: int) -> str:
    return f"persona:review:{action}:{turn_id}"


def workspace_fields(guild_id: int | None, guild_name: str, user_id: int, manages: bool = False) -> dict[str, Any]:
    """The Event fields naming where it happened: the server (its name, and whether the user has
    Manage Server there: an admin of its workspace), or the user's personal workspace in a DM."""
    if guild_id is None:
        return {"workspace": f"dm:{user_id}"}
    return {"workspace": str(guild_id), "workspace_name": guild_name, "workspace_admin": manages}


def interaction_workspace(interaction: discord.Interaction[Any]) -> dict[str, Any]:
    guild_id = interaction.guild_id
    manages = guild_id is not None and interaction.permissions.manage_guild
    name = interaction.guild.name if interaction.guild is not None else ""
    return workspace_fields(guild_id, name, interaction.user.id, manages)


def interaction_event(interaction: Any, kind: EventKind, command: str, **fields: Any) -> Event:
    """A slash command or button click (live, or rebuilt after a restart) as the commands layer's event."""
    channel_id, thread_id = channel_ids(interaction.channel)
    return Event(
        platform=PLATFORM,
        user_id=str(interaction.user.id),
        user_name=interaction.user.display_name,
        kind=kind,
        command=command,
        channel_id=channel_id,
        thread_id=thread_id,
        **{**interaction_workspace(interaction), **fields},
    )


def member_workspace(guild: discord.Guild | None, member: object, user_id: int) -> dict[str, Any]:
    """The fields for a message or reaction of ``member`` (a discord.Member in a server)."""
    permissions = getattr(member, "guild_permissions", None)
    manages = bool(permissions is not None and permissions.manage_guild)
    return workspace_fields(guild.id if guild is not None else None, guild.name if guild else "", user_id, manages)


def strip_mentions(content: str, user_id: int) -> str:
    return re.sub(rf"<@!?{user_id}>", "", content).strip()


def role_id(role: str, key: str) -> str:
    return f"persona:ref:{role}:{key}"


async def download_attachments(
    attachments: Sequence[discord.Attachment], roles: Sequence[str | None] = ()
) -> tuple[Attachment, ...]:
    """Read uploads now: Discord CDN links expire, so the bytes travel in the event. ``roles``
    (parallel to ``attachments``) are the reference roles their options say.

    Everything is checked before anything is downloaded: the number of files, then each size.
    """
    if len(attachments) > MAX_ATTACHMENTS:
        raise UserFacingError(
            f"Attach at most {MAX_ATTACHMENTS} images; this message has {len(attachments)}. Nothing was changed."
        )
    for attachment in attachments:
        if attachment.size > MAX_IMAGE_BYTES:
            raise UserFacingError(
                f"{attachment.filename} is {attachment.size / 1e6:.1f} MB; images may be at most "
                f"{MAX_IMAGE_BYTES // (1024 * 1024)} MB. Nothing was changed."
            )
    out = []
    for index, attachment in enumerate(attachments):
        role = roles[index] if index < len(roles) else None
        try:
            data = await attachment.read()
        except (discord.HTTPException, OSError) as exc:
            raise UserFacingError(
                f"Could not download {attachment.filename} from Discord ({exc.__class__.__name__}); "
                "please upload it again. Nothing was changed."
            ) from exc
        out.append(Attachment(filename=attachment.filename, data=data, content_type=attachment.content_type, role=role))
    return tuple(out)
