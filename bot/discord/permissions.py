"""What the bot needs in a Discord server, the invite URL that grants it, and the texts of failure."""

from __future__ import annotations

import discord

MISSING_PERMISSIONS_TEXT = (
    "I am missing a permission in this channel ({error}). I need View Channel, Send Messages, "
    "Create Public Threads, Send Messages in Threads, Attach Files, Add Reactions, Read Message History "
    "and Manage Messages; a server admin can grant them or re-invite me (docs/discord.md)."
)
SOMETHING_WENT_WRONG_TEXT = "Something went wrong on our side; nothing was changed. Please try again."

#: What the bot needs in a channel; docs/discord.md lists them with reasons.
REQUIRED_PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    create_public_threads=True,
    read_message_history=True,
    attach_files=True,
    add_reactions=True,
    manage_messages=True,  # remove strangers' reactions on results
)


def invite_url(application_id: int | str) -> str:
    """The OAuth2 URL that adds the bot to a server with the commands scope and its permissions."""
    return (
        f"https://discord.com/oauth2/authorize?client_id={application_id}"
        f"&scope=bot+applications.commands&permissions={REQUIRED_PERMISSIONS.value}"
    )
