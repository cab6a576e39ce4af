"""What a Discord user can type or click: the slash commands and the result buttons.

The slash commands are built from the command table (:data:`commands.table.COMMANDS`): names,
descriptions, options with their bounds, autocompletion. Each one only hands its options to
:meth:`InteractionHost.run_command`; each result button (``persona:<action>:<turn id>``, a dynamic
item that survives restarts) hands its click to :meth:`InteractionHost.on_result_button`. The
client (``bot.discord.client.PersonaBot``) is the host.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import discord
from discord import app_commands

from bot.discord.translate import (
    CUSTOM_ID_TEMPLATE,
    PLATFORM,
    REVIEW_ID_TEMPLATE,
    ROLE_ID_TEMPLATE,
    custom_id,
    interaction_workspace,
    review_id,
    role_id,
)
from bot.frontend import ConversationPort
from commands.command import Arg, Command
from commands.events import BUTTON_EMOJI, Button
from commands.table import COMMANDS
from engine.specs import ReferenceRole

log = logging.getLogger(__name__)

AUTOCOMPLETE_TIMEOUT_S = 2.5


@runtime_checkable
class InteractionHost(Protocol):
    """The client that commands and buttons hand their interactions to."""

    @property
    def conversation(self) -> ConversationPort: ...

    async def run_command(
        self,
        interaction: discord.Interaction[Any],
        command: str,
        options: dict[str, Any] | None = None,
        attachments: Sequence[discord.Attachment | None] = (),
        roles: Sequence[str | None] = (),
    ) -> None: ...

    async def on_result_button(self, interaction: discord.Interaction[Any], action: Button, turn_id: int) -> None: ...

    async def on_role_button(self, interaction: discord.Interaction[Any], role: str, key: str) -> None: ...

    async def on_review_button(self, interaction: discord.Interaction[Any], action: str, turn_id: int) -> None: ...


# -- result buttons ----------------------------------------------------------------------------

_BUTTON_STYLE = {
    Button.APPROVE: discord.ButtonStyle.success,
    Button.REGEN: discord.ButtonStyle.primary,
    Button.UNDO: discord.ButtonStyle.secondary,
    Button.CANCEL: discord.ButtonStyle.danger,
}
_BUTTON_LABEL = {Button.APPROVE: "Approve", Button.REGEN: "Regenerate", Button.UNDO: "Undo", Button.CANCEL: "Cancel"}


class ResultButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=CUSTOM_ID_TEMPLATE):
    """One of ✅ 🔁 ↩️ ❌ under a result; the custom id carries the action and the turn id."""

    def __init__(self, action: Button, turn_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                style=_BUTTON_STYLE[action],
                label=_BUTTON_LABEL[action],
                emoji=BUTTON_EMOJI[action],
                custom_id=custom_id(action, turn_id),
            )
        )
        self.action = action
        self.turn_id = turn_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> ResultButton:
        return cls(Button(match["action"]), int(match["turn"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        client = interaction.client
        if isinstance(client, InteractionHost):
            await client.on_result_button(interaction, self.action, self.turn_id)


class ReviewButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=REVIEW_ID_TEMPLATE):
    """Approve / Request changes under a review request; the custom id carries the action and the turn."""

    def __init__(self, action: str, turn_id: int) -> None:
        approve = action == "approve"
        super().__init__(
            discord.ui.Button(
                style=discord.ButtonStyle.success if approve else discord.ButtonStyle.danger,
                label="Approve" if approve else "Request changes",
                emoji="✅" if approve else "↩️",
                custom_id=review_id(action, turn_id),
            )
        )
        self.action = action
        self.turn_id = turn_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> ReviewButton:
        return cls(match["action"], int(match["turn"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        client = interaction.client
        if isinstance(client, InteractionHost):
            await client.on_review_button(interaction, self.action, self.turn_id)


def review_view(turn_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for action in ("approve", "reject"):
        view.add_item(ReviewButton(action, turn_id))
    return view


def result_view(turn_id: int, buttons: Sequence[Button]) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for action in buttons:
        view.add_item(ResultButton(action, turn_id))
    return view


_ROLE_LABEL = {
    ReferenceRole.PRODUCT: "Product 商品",
    ReferenceRole.SCENE: "Scene 场景",
    ReferenceRole.FACE: "Face 人脸",
}
_ROLE_EMOJI = {ReferenceRole.PRODUCT: "🛍️", ReferenceRole.SCENE: "🏞️", ReferenceRole.FACE: "🙂"}


class RoleButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=ROLE_ID_TEMPLATE):
    """Product / Scene / Face under a role question; the custom id carries the role and the image."""

    def __init__(self, role: str, key: str) -> None:
        super().__init__(
            discord.ui.Button(
                style=discord.ButtonStyle.secondary,
                label=_ROLE_LABEL[role],
                emoji=_ROLE_EMOJI[role],
                custom_id=role_id(role, key),
            )
        )
        self.role = role
        self.key = key

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> RoleButton:
        return cls(match["role"], match["key"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        client = interaction.client
        if isinstance(client, InteractionHost):
            await client.on_role_button(interaction, self.role, self.key)


def role_view(key: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for role in _ROLE_LABEL:
        view.add_item(RoleButton(role, key))
    return view


# -- slash commands ----------------------------------------------------------------------------

SlashCommand = app_commands.Command[Any, Any, Any] | app_commands.Group
Autocomplete = Callable[[discord.Interaction[Any], str], Awaitable[list[app_commands.Choice[str]]]]
#: a seed typed as digits is a number (the option is text, for "random")
_NUMBER_WHEN_DIGITS = frozenset({"seed"})
_KINDS: dict[str, type] = {"str": str, "int": int, "float": float}


def build_commands(bot: InteractionHost, archetypes: Sequence[str]) -> list[SlashCommand]:
    """The table's commands offered on Discord, with archetype choices when there are 1-25."""

    async def personas(interaction: discord.Interaction[Any], current: str) -> list[app_commands.Choice[str]]:
        try:
            names = await asyncio.wait_for(
                bot.conversation.persona_names(
                    PLATFORM, str(interaction.user.id), current, interaction_workspace(interaction)["workspace"]
                ),
                AUTOCOMPLETE_TIMEOUT_S,
            )
        except Exception:
            log.warning("persona autocomplete failed", exc_info=True)
            return []
        return [app_commands.Choice(name=name[:100], value=name[:100]) for name in names[:25]]

    async def products(interaction: discord.Interaction[Any], current: str) -> list[app_commands.Choice[str]]:
        # a comma-separated list: complete its last name, keep the ones before
        done, _, last = current.rpartition(",")
        head = f"{done}," if done else ""
        try:
            names = await asyncio.wait_for(
                bot.conversation.product_names(
                    PLATFORM, str(interaction.user.id), last.strip(), interaction_workspace(interaction)["workspace"]
                ),
                AUTOCOMPLETE_TIMEOUT_S,
            )
        except Exception:
            log.warning("product autocomplete failed", exc_info=True)
            return []
        values = [(head + name)[:100] for name in names[:25]]
        return [app_commands.Choice(name=value, value=value) for value in values]

    async def archetype_names(interaction: discord.Interaction[Any], current: str) -> list[app_commands.Choice[str]]:
        try:
            names = await asyncio.wait_for(bot.conversation.archetypes(), AUTOCOMPLETE_TIMEOUT_S)
        except Exception:
            log.warning("archetype autocomplete failed", exc_info=True)
            return []
        matching = [n for n in names if n.lower().startswith(current.lower())]
        return [app_commands.Choice(name=n[:100], value=n[:100]) for n in matching[:25]]

    choices = [app_commands.Choice(name=a[:100], value=a[:100]) for a in dict.fromkeys(archetypes)]
    builder = _Builder(
        bot,
        {"personas": personas, "products": products, "archetypes": archetype_names},
        choices if len(choices) <= 25 else [],
    )
    return [builder.build(command) for command in COMMANDS if command.offered_on(PLATFORM)]


def discord_args(row: Command) -> list[Arg]:
    """The row's arguments that are Discord options (text-only words such as ``/settings post`` are not)."""
    return [arg for arg in row.args if not arg.text_only]


class _Builder:
    def __init__(
        self, bot: InteractionHost, autocomplete: dict[str, Autocomplete], archetypes: list[app_commands.Choice[str]]
    ) -> None:
        self.bot = bot
        self.autocomplete = autocomplete
        self.archetypes = archetypes

    def build(self, command: Command) -> SlashCommand:
        if not command.subcommands:
            return app_commands.guild_only()(self._command(command, command.name, None))
        group = app_commands.Group(name=command.name, description=command.summary, guild_only=True)
        for sub in command.subcommands:
            group.add_command(self._command(sub, command.name, sub.name))
        return group

    def _command(self, row: Command, name: str, action: str | None) -> app_commands.Command[Any, Any, Any]:
        """One slash command (or subcommand) whose callback hands its options to ``run_command``."""
        bot = self.bot
        args = discord_args(row)

        async def callback(interaction: discord.Interaction[Any], **values: Any) -> None:
            attachments = [values.pop(arg.name, None) for arg in args if arg.kind == "attachment"]
            roles = [arg.role for arg in args if arg.kind == "attachment"]
            for key in _NUMBER_WHEN_DIGITS & values.keys():
                value = values[key]
                if isinstance(value, str) and value.strip().isdigit():
                    values[key] = int(value)
            options = ({"action": action} if action else {}) | values
            given = [(a, role) for a, role in zip(attachments, roles, strict=True) if a is not None]
            if not options and not given:
                await bot.run_command(interaction, name)
            else:
                await bot.run_command(interaction, name, options, [a for a, _ in given], [role for _, role in given])

        parameters = [inspect.Parameter("interaction", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        parameters += [self._parameter(arg) for arg in args]
        callback.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        slash = app_commands.Command(name=row.name, description=row.summary, callback=callback)
        slash = app_commands.describe(**{arg.name: arg.description for arg in args})(slash)
        for arg in args:
            if arg.autocomplete == "archetypes" and self.archetypes:
                slash = app_commands.choices(**{arg.name: self.archetypes})(slash)
            elif arg.autocomplete is not None:
                slash = app_commands.autocomplete(**{arg.name: self.autocomplete[arg.autocomplete]})(slash)
        return slash

    @staticmethod
    def _parameter(arg: Arg) -> inspect.Parameter:
        """The callback parameter of an option: its type (with bounds) tells discord.py the option."""
        annotation: Any
        if arg.kind == "attachment":
            annotation = discord.Attachment
        else:
            kind = _KINDS[arg.kind]
            bound = int if kind is not float else float
            if arg.min is None and arg.max is None:
                annotation = kind
            else:
                low = None if arg.min is None else bound(arg.min)
                high = None if arg.max is None else bound(arg.max)
                annotation = app_commands.Range[kind, low, high]
        if not arg.required:
            annotation = annotation | None
        default = inspect.Parameter.empty if arg.required else arg.default
        return inspect.Parameter(arg.name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
