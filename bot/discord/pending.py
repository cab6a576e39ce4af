"""Slash commands and button clicks survive a kill between the acknowledgement and the answer.

A command is stored in the inbox (:mod:`storage.inbox`, like a WeCom callback) before it is
deferred: its name, options, attachments, where it came from and its interaction token; a
button click likewise (which handler and its arguments), before its deferred update. Once it is
answered the row is done, also where its handling failed (it must not run again after a restart);
only a process that stops or dies leaves it pending. A start handles the rows a killed process
left while their token is still valid (15 minutes from the interaction): a command's answer
edits the "thinking…" message and a click's goes out as a followup through the token's webhook,
late but not never. Rows whose token has expired are dropped with a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import discord

from storage.inbox import Inbox
from storage.models import InboxItem

log = logging.getLogger(__name__)

#: an interaction token lives 15 minutes; a stored command is answered only well inside that
TOKEN_LIFE = timedelta(minutes=15)
TOKEN_MARGIN = timedelta(seconds=30)
KEEP_DONE = timedelta(hours=1)
#: an interaction's inbox write before its acknowledgement (3 s deadline) is waited for this long
STORE_TIMEOUT_S = 1.5


def inbox_platform(application_id: int | None) -> str:
    return f"discord:{application_id or 0}"


def _origin(interaction: discord.Interaction[Any]) -> dict[str, Any]:
    """Who acted, where, and the token a restart answers through (plain JSON)."""
    return {
        "user_id": interaction.user.id,
        "user_name": interaction.user.display_name,
        "channel_id": interaction.channel_id,
        "guild_id": interaction.guild_id,
        "guild_name": interaction.guild.name if interaction.guild is not None else "",
        "manage_guild": bool(interaction.guild_id is not None and interaction.permissions.manage_guild),
        "application_id": interaction.application_id,
        "token": interaction.token,
        "created_at": interaction.created_at.isoformat(),
    }


def stored_command(
    interaction: discord.Interaction[Any],
    command: str,
    options: dict[str, Any],
    attachments: list[discord.Attachment],
    roles: list[str | None],
) -> dict[str, Any]:
    """What a restart needs to answer the command: plain JSON (attachments as Discord's own data)."""
    return {
        "command": command,
        "options": {k: v for k, v in options.items() if isinstance(v, str | int | float | bool)},
        "attachments": [a.to_dict() for a in attachments],
        "roles": roles,
        **_origin(interaction),
    }


def stored_click(interaction: discord.Interaction[Any], click: str, args: dict[str, str | int]) -> dict[str, Any]:
    """What a restart needs to handle a button click: which handler (``result``, ``review``,
    ``role``) and its arguments."""
    return {"click": click, "args": dict(args), **_origin(interaction)}


def describe(payload: dict[str, Any]) -> str:
    """A stored interaction in a log line: ``/post`` or ``the approve button``."""
    if "click" in payload:
        args = payload.get("args") or {}
        return f"the {args.get('action') or args.get('role') or payload['click']} button"
    return f"/{payload.get('command')}"


class ResumedInteraction:
    """The parts of a :class:`discord.Interaction` the renderer uses, rebuilt from a stored
    command or click after a restart: its channel and its token's webhook (followups, the original)."""

    def __init__(self, client: discord.Client, payload: dict[str, Any], channel: Any) -> None:
        self.channel = channel
        self.channel_id = payload.get("channel_id")
        self.user = SimpleNamespace(id=int(payload["user_id"]), display_name=str(payload.get("user_name") or ""))
        #: where it was asked (bot.discord.translate.interaction_workspace reads these)
        self.guild_id = payload.get("guild_id")
        self.guild = SimpleNamespace(name=payload.get("guild_name") or "") if self.guild_id is not None else None
        self.permissions = SimpleNamespace(manage_guild=bool(payload.get("manage_guild")))
        self.filesize_limit = None
        self.message = None  # the message a clicked button was on is not kept
        self.followup = discord.Webhook.from_state(
            data={"id": payload["application_id"], "type": 3, "token": payload["token"]},
            state=client._connection,  # as discord.Interaction.followup builds it
        )

    async def edit_original_response(self, **fields: Any) -> discord.Message:
        return await self.followup.edit_message("@original", **fields)

    async def delete_original_response(self) -> None:
        await self.followup.delete_message("@original")


def attachments_of(client: discord.Client, payload: dict[str, Any]) -> list[discord.Attachment]:
    return [discord.Attachment(data=data, state=client._connection) for data in payload.get("attachments") or []]


def still_valid(payload: dict[str, Any], now: datetime | None = None) -> bool:
    created = datetime.fromisoformat(str(payload.get("created_at")))
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return (now or datetime.now(UTC)) < created + TOKEN_LIFE - TOKEN_MARGIN


async def pending_commands(inbox: Inbox, platform: str) -> tuple[list[InboxItem], list[InboxItem]]:
    """The stored interactions a previous run left: (answerable, expired); the expired are marked done."""
    await inbox.purge(platform, KEEP_DONE)  # answered commands are kept a while, then dropped
    rows = await inbox.take_over(platform, own_too=True)
    valid = [row for row in rows if still_valid(row.payload)]
    expired = [row for row in rows if row not in valid]
    for row in expired:
        log.warning(
            "discord: %s from %s expired before it was answered", describe(row.payload), row.payload.get("user_id")
        )
        await inbox.done(row.id)
    return valid, expired


class InteractionStore:
    """Keeps each interaction in the inbox from just before its acknowledgement until it has
    been handled (:meth:`kept`), and knows which ones this process has in hand (:attr:`answering`:
    the start-up sweep leaves those)."""

    def __init__(self, inbox: Inbox | None) -> None:
        self.inbox = inbox
        #: inbox keys of the interactions this process is handling
        self.answering: set[str] = set()
        #: writes that outlasted STORE_TIMEOUT_S, still going: their row is marked done once stored
        self._late: dict[str, asyncio.Future[int | None]] = {}

    @contextlib.asynccontextmanager
    async def kept(self, interaction: discord.Interaction[Any], payload: dict[str, Any]) -> AsyncIterator[None]:
        """Store ``payload``, run the block (acknowledge and handle), then mark the row done. A
        block that fails marks it done too: it was handled, if badly, and must not run again after
        a restart (a click that Discord showed as failed, a reply that could not be sent). Only a
        cancellation (the process stopping) leaves the row for the next start."""
        key = f"interaction:{interaction.id}"
        item_id = await self._store(interaction, key, payload)
        try:
            yield
        except Exception:
            await self._settle(key, item_id)
            raise
        except BaseException:
            self._forget(key)
            raise
        await self._settle(key, item_id)

    async def _store(self, interaction: discord.Interaction[Any], key: str, payload: dict[str, Any]) -> int | None:
        if self.inbox is None:
            return None
        self.answering.add(key)  # before the row exists: a sweep never sees it without this mark
        accept = asyncio.ensure_future(self.inbox.accept(inbox_platform(interaction.application_id), key, payload))
        try:
            return await asyncio.wait_for(asyncio.shield(accept), STORE_TIMEOUT_S)
        except TimeoutError:  # answered now all the same; the write goes on and is marked done after
            log.warning("discord: %s not stored within %.1f s; answering it now", describe(payload), STORE_TIMEOUT_S)
            self._late[key] = accept
            return None
        except Exception:
            log.warning("discord: %s could not be stored before its answer", describe(payload), exc_info=True)
            return None
        except BaseException:
            self._forget(key)
            raise

    def _forget(self, key: str) -> None:
        """Not in hand any more (its row, if any, stays as it is)."""
        self.answering.discard(key)
        self._late.pop(key, None)

    async def _settle(self, key: str, item_id: int | None) -> None:
        try:
            late = self._late.get(key)
            if item_id is None and late is not None:
                with contextlib.suppress(Exception):
                    item_id = await late
            if item_id is not None and self.inbox is not None:
                with contextlib.suppress(Exception):
                    await self.inbox.done(item_id)
        finally:
            self._forget(key)
