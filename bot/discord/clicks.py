"""Button clicks on Discord: result (✅ 🔁 ↩️ ❌), review and reference-role buttons.

A click is acknowledged with a deferred update, and like a slash command it is stored in the
inbox first (:mod:`bot.discord.pending`): a process killed between the acknowledgement and the
handling leaves the row, and the next start handles the click while its token is valid — its
answer comes as a followup through the token's webhook. Each handler therefore takes the
interaction it answers as given (a live one, or one rebuilt from the row).
:class:`ButtonClicks` is a part of :class:`bot.discord.client.PersonaBot`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import discord

from bot.discord.pending import InteractionStore, stored_click
from bot.discord.permissions import SOMETHING_WENT_WRONG_TEXT
from bot.discord.render import InteractionOutput
from bot.discord.translate import PLATFORM, channel_ids, interaction_event, interaction_workspace
from commands.events import Button, EventKind

if TYPE_CHECKING:
    from bot.discord.render import ActionRenderer
    from bot.frontend import ConversationPort

log = logging.getLogger(__name__)


class ButtonClicks:
    """Stored, acknowledged, then handled: the clicks of the client it is mixed into."""

    conversation: ConversationPort
    renderer: ActionRenderer

    #: provided by the client: keeps a click in the inbox from before its acknowledgement until handled
    interactions: InteractionStore
    # the result message -> turn memory of the reactions (an annotation only: the MRO finds theirs)
    _remember_turn: Callable[[int, int], None]

    async def _click(self, interaction: discord.Interaction[Any], click: str, args: dict[str, Any]) -> None:
        async with self.interactions.kept(interaction, stored_click(interaction, click, args)):
            await interaction.response.defer()  # DEFERRED_UPDATE_MESSAGE: the clicked message stays as is
            self.renderer.upload_limits.note(interaction)
            await self.handle_click(interaction, click, args)

    async def handle_click(self, interaction: Any, click: str, args: dict[str, Any]) -> None:
        """Handle a stored or live click (``interaction`` may be rebuilt after a restart)."""
        output = InteractionOutput(interaction, thinking=False)
        if click == "result":
            await self._result_click(output, interaction, Button(args["action"]), int(args["turn_id"]))
        elif click == "review":
            await self._review_click(output, interaction, str(args["action"]), int(args["turn_id"]))
        elif click == "role":
            await self._role_click(output, interaction, str(args["role"]), str(args["key"]))
        else:
            log.warning("discord: a stored click of an unknown kind %r is dropped", click)

    async def on_result_button(self, interaction: discord.Interaction[Any], action: Button, turn_id: int) -> None:
        await self._click(interaction, "result", {"action": action.value, "turn_id": turn_id})

    async def on_review_button(self, interaction: discord.Interaction[Any], action: str, turn_id: int) -> None:
        """Approve / Request changes under a review request: the reviewer's ``approve`` or ``reject``
        of the turn (the conversation checks the role; request changes then asks for the reason)."""
        await self._click(interaction, "review", {"action": action, "turn_id": turn_id})

    async def on_role_button(self, interaction: discord.Interaction[Any], role: str, key: str) -> None:
        """Product / Scene / Face clicked under a role question: the ``reference`` command.
        Only the user who sent the images has them waiting; anyone else is told so privately."""
        await self._click(interaction, "role", {"role": role, "key": key})

    async def _result_click(self, output: InteractionOutput, interaction: Any, action: Button, turn_id: int) -> None:
        """Only a post's owner (or a workspace admin) may act on its results."""
        try:
            channel_id, thread_id = channel_ids(interaction.channel)
            where = thread_id or channel_id or 0
            workspace = interaction_workspace(interaction)
            owner = await self.conversation.thread_owner(PLATFORM, where)
            if (
                owner is not None
                and not workspace.get("workspace_admin")
                and not await self.conversation.can_act(PLATFORM, str(interaction.user.id), where)
            ):
                await output.reply(f"Only <@{owner}> can use the buttons of this post.", private=True)
                return
            if interaction.message is not None:
                self._remember_turn(interaction.message.id, turn_id)
        except Exception:
            log.exception("button %s on turn %s failed", action, turn_id)
            await output.reply(SOMETHING_WENT_WRONG_TEXT, private=True)
            return
        what = f"button {action} on turn {turn_id}"
        await self._answer(output, interaction, what, EventKind.REACTION, action.value, turn_id=turn_id)

    async def _review_click(self, output: InteractionOutput, interaction: Any, action: str, turn_id: int) -> None:
        what = f"review button {action} on turn {turn_id}"
        await self._answer(output, interaction, what, EventKind.REACTION, action, turn_id=turn_id)

    async def _role_click(self, output: InteractionOutput, interaction: Any, role: str, key: str) -> None:
        options = {"role": role, "key": key}
        await self._answer(output, interaction, f"role button {role}", EventKind.COMMAND, "reference", options=options)

    async def _answer(
        self, output: InteractionOutput, interaction: Any, what: str, kind: EventKind, command: str, **fields: Any
    ) -> None:
        """The click as an event to the conversation, its actions rendered; a failure is logged
        and the user told privately."""
        try:
            event = interaction_event(interaction, kind, command, **fields)
            actions = await self.conversation.handle(event)
            await self.renderer.render(actions, output, interaction=interaction)
        except Exception:
            log.exception("%s failed", what)
            await output.reply(SOMETHING_WENT_WRONG_TEXT, private=True)
