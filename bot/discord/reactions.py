"""Reactions on Discord results: ✅ 🔁 ↩️ ❌ under a result become REACTION events.

A button's custom id carries its turn id; a reaction's turn is remembered from the result message
(or read from its buttons' custom ids). Only a post's owner may act on its results: a stranger's
click gets an ephemeral refusal; a stranger's reaction is removed and they get a short reply in
the thread that mentions them (deleted after a while) — a DM could be refused by their privacy
settings. :class:`ResultReactions` is a part of :class:`bot.discord.client.PersonaBot`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import discord
from cachetools import LRUCache

from bot.discord.render import MessageOutput
from bot.discord.translate import PLATFORM, channel_ids, member_workspace, parse_custom_id
from commands.events import EMOJI_BUTTON, Event, EventKind

if TYPE_CHECKING:
    from bot.discord.render import ActionRenderer
    from bot.frontend import ConversationPort

log = logging.getLogger(__name__)

REFUSAL_DELETE_AFTER_S = 20.0
REMEMBERED_RESULTS = 10_000


class ResultReactions:
    """Reactions on results, for the Discord client it is mixed into (clicks: bot.discord.clicks)."""

    conversation: ConversationPort
    renderer: ActionRenderer
    user: discord.ClientUser | None
    cached_messages: Any
    _turns: LRUCache[int, int]  # result message id -> turn id, set up by the client

    def _init_reactions(self) -> None:
        self._turns = LRUCache(REMEMBERED_RESULTS)

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        if self.user is None or payload.user_id == self.user.id or payload.guild_id is None:
            return
        action = EMOJI_BUTTON.get(str(payload.emoji))
        if action is None:
            return
        try:
            turn_id = await self._turn_of(payload.channel_id, payload.message_id)
            if turn_id is None:
                return
            channel = await self.renderer.channel(payload.channel_id)
            guild = self.get_guild(payload.guild_id)
            workspace = member_workspace(guild, payload.member, payload.user_id)
            if guild is None:
                workspace = {"workspace": str(payload.guild_id)}
            owner = await self.conversation.thread_owner(PLATFORM, payload.channel_id)
            if (
                owner is not None
                and not workspace.get("workspace_admin")
                and not await self.conversation.can_act(PLATFORM, str(payload.user_id), payload.channel_id)
            ):
                await self._refuse_reaction(channel, payload, owner)
                return
            channel_id, thread_id = channel_ids(channel)
            member = payload.member
            event = Event(
                platform=PLATFORM,
                user_id=str(payload.user_id),
                user_name=member.display_name if member is not None else "",
                kind=EventKind.REACTION,
                command=action.value,
                turn_id=turn_id,
                channel_id=channel_id,
                thread_id=thread_id,
                **workspace,
            )
            actions = await self.conversation.handle(event)
            await self.renderer.render(actions, MessageOutput(channel, payload.user_id))
        except Exception:
            log.exception("reaction %s on message %s failed", payload.emoji, payload.message_id)

    async def _refuse_reaction(self, channel: Any, payload: discord.RawReactionActionEvent, owner: str) -> None:
        message = channel.get_partial_message(payload.message_id)
        try:
            await message.remove_reaction(payload.emoji, discord.Object(payload.user_id))
        except discord.HTTPException as exc:
            log.warning("could not remove a stranger's reaction (Manage Messages missing?): %s", exc)
        await channel.send(
            f"<@{payload.user_id}> only <@{owner}> can act on the results of this post.",
            allowed_mentions=discord.AllowedMentions(users=[discord.Object(payload.user_id)]),
            delete_after=REFUSAL_DELETE_AFTER_S,
        )

    def _remember_turn(self, message_id: int, turn_id: int) -> None:
        self._turns[message_id] = turn_id

    async def _turn_of(self, channel_id: int, message_id: int) -> int | None:
        """The turn a result message shows: remembered, or read from its buttons' custom ids."""
        if message_id in self._turns:
            return self._turns[message_id]
        message = discord.utils.get(self.cached_messages, id=message_id)
        if message is None:
            channel = await self.renderer.channel(channel_id)
            try:
                message = await channel.fetch_message(message_id)
            except discord.HTTPException:
                return None
        if self.user is None or message.author.id != self.user.id:
            return None
        for row in message.components:
            for component in getattr(row, "children", []):
                parsed = parse_custom_id(getattr(component, "custom_id", None) or "")
                if parsed is not None:
                    self._remember_turn(message_id, parsed[1])
                    return parsed[1]
        return None
