"""What a Discord user can type or click: the slash commands and the result buttons.

Each slash command only hands its options to :meth:`InteractionHost.run_command`; each result
button (``persona:<action>:<turn id>``, a dynamic item that survives restarts) hands its click to
:meth:`InteractionHost.on_result_button`. The client (``bot.discord.client.PersonaBot``) is the host.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import discord
from discord import app_commands

from bot.discord.translate import CUSTOM_ID_TEMPLATE, PLATFORM, custom_id
from commands.events import BUTTON_EMOJI, Button
from commands.validation import MAX_TEXT_CHARS
from engine.specs import RenderParams

log = logging.getLogger(__name__)

AUTOCOMPLETE_TIMEOUT_S = 2.5


def render_bounds(field: str) -> tuple[float, float]:
    """``(low, high)`` of a render parameter, read from ``RenderParams``' field constraints, so
    Discord's options allow exactly what ``/settings`` accepts everywhere."""
    low = high = None
    for rule in RenderParams.model_fields[field].metadata:
        low = getattr(rule, "ge", low)
        high = getattr(rule, "le", high)
    assert low is not None and high is not None, f"RenderParams.{field} needs ge= and le="
    return float(low), float(high)


# Module constants: discord.py reads option ranges from the callbacks' annotations.
STEPS_MIN, STEPS_MAX = (int(bound) for bound in render_bounds("steps"))
GUIDANCE_MIN, GUIDANCE_MAX = render_bounds("guidance")


class PersonaCatalog(Protocol):
    """What autocompletion needs of the conversation."""

    async def archetypes(self) -> list[str]: ...
    async def persona_names(self, platform: str, user_id: str, prefix: str = "") -> list[str]: ...


@runtime_checkable
class InteractionHost(Protocol):
    """The client that commands and buttons hand their interactions to."""

    @property
    def conversation(self) -> PersonaCatalog: ...

    async def run_command(
        self,
        interaction: discord.Interaction[Any],
        command: str,
        options: dict[str, Any] | None = None,
        attachments: Sequence[discord.Attachment | None] = (),
    ) -> None: ...

    async def on_result_button(self, interaction: discord.Interaction[Any], action: Button, turn_id: int) -> None: ...


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


def result_view(turn_id: int, buttons: Sequence[Button]) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for action in buttons:
        view.add_item(ResultButton(action, turn_id))
    return view


# -- slash commands ----------------------------------------------------------------------------

_SIMPLE_COMMANDS = {
    "approve": "✅ Approve the current result of this post",
    "regen": "🔁 Regenerate the current result with a new seed",
    "undo": "↩️ Go back to the previous image of this post",
    "cancel": "❌ Cancel this post's running job",
    "history": "The turn tree of this post, with identity scores",
    "export": "Approved images of this post and a manifest, as a zip",
    "status": "Your jobs and their places in the queue",
    "help": "How Persona Studio works",
}


def build_commands(
    bot: InteractionHost, archetypes: Sequence[str]
) -> list[app_commands.Command[Any, Any, Any] | app_commands.Group]:
    """The slash commands, with archetype choices when there are 1-25 archetypes."""

    async def autocomplete_personas(
        interaction: discord.Interaction[Any], current: str
    ) -> list[app_commands.Choice[str]]:
        try:
            names = await asyncio.wait_for(
                bot.conversation.persona_names(PLATFORM, str(interaction.user.id), current), AUTOCOMPLETE_TIMEOUT_S
            )
        except Exception:
            log.warning("persona autocomplete failed", exc_info=True)
            return []
        return [app_commands.Choice(name=name[:100], value=name[:100]) for name in names[:25]]

    async def autocomplete_archetypes(
        interaction: discord.Interaction[Any], current: str
    ) -> list[app_commands.Choice[str]]:
        try:
            names = await asyncio.wait_for(bot.conversation.archetypes(), AUTOCOMPLETE_TIMEOUT_S)
        except Exception:
            log.warning("archetype autocomplete failed", exc_info=True)
            return []
        matching = [n for n in names if n.lower().startswith(current.lower())]
        return [app_commands.Choice(name=n[:100], value=n[:100]) for n in matching[:25]]

    persona = app_commands.Group(name="persona", description="Create and manage personas", guild_only=True)

    async def persona_create(
        interaction: discord.Interaction[Any],
        archetype: str,
        name: app_commands.Range[str, 1, 40] | None = None,
    ) -> None:
        # no image option: a persona's face is the LoRA blend itself (its portrait is rendered)
        await bot.run_command(interaction, "persona", {"action": "create", "archetype": archetype, "name": name})

    choices = list(dict.fromkeys(archetypes))
    if 1 <= len(choices) <= 25:
        pick = app_commands.choices(archetype=[app_commands.Choice(name=a[:100], value=a[:100]) for a in choices])
    else:
        pick = app_commands.autocomplete(archetype=autocomplete_archetypes)
    persona.command(name="create", description="Create a persona: a new face blended from an archetype's LoRAs")(
        app_commands.describe(
            archetype="the look to start from",
            name="a name for the persona (default: one is made up)",
        )(pick(persona_create))
    )

    @persona.command(name="list", description="Your personas")
    async def persona_list(interaction: discord.Interaction[Any]) -> None:
        await bot.run_command(interaction, "persona", {"action": "list"})

    @persona.command(name="show", description="Show a persona: its mix, seed and reference face")
    @app_commands.describe(name="the persona")
    @app_commands.autocomplete(name=autocomplete_personas)
    async def persona_show(interaction: discord.Interaction[Any], name: str) -> None:
        await bot.run_command(interaction, "persona", {"action": "show", "name": name})

    @persona.command(name="delete", description="Delete one of your personas")
    @app_commands.describe(name="the persona")
    @app_commands.autocomplete(name=autocomplete_personas)
    async def persona_delete(interaction: discord.Interaction[Any], name: str) -> None:
        await bot.run_command(interaction, "persona", {"action": "delete", "name": name})

    @app_commands.command(name="post", description="Open a post thread with the first images of a persona")
    @app_commands.guild_only()
    @app_commands.describe(
        persona="which persona",
        prompt="what the picture shows",
        count="how many images (1-4)",
        image="optional scene image to start from",
    )
    @app_commands.autocomplete(persona=autocomplete_personas)
    async def post(
        interaction: discord.Interaction[Any],
        persona: str,
        prompt: app_commands.Range[str, 1, MAX_TEXT_CHARS],
        count: app_commands.Range[int, 1, 4] = 1,
        image: discord.Attachment | None = None,
    ) -> None:
        await bot.run_command(interaction, "post", {"persona": persona, "count": count, "prompt": prompt}, [image])

    @app_commands.command(
        name="settings", description="Generation settings: in a post for that post, elsewhere your defaults"
    )
    @app_commands.guild_only()
    @app_commands.describe(
        steps="denoising steps",
        guidance="guidance scale",
        size="image size as WxH, e.g. 1024x1024",
        seed="a number, or 'random'",
    )
    async def settings(
        interaction: discord.Interaction[Any],
        steps: app_commands.Range[int, STEPS_MIN, STEPS_MAX] | None = None,
        guidance: app_commands.Range[float, GUIDANCE_MIN, GUIDANCE_MAX] | None = None,
        size: app_commands.Range[str, 3, 11] | None = None,
        seed: app_commands.Range[str, 1, 20] | None = None,
    ) -> None:
        seed_value: int | str | None = int(seed) if seed is not None and seed.strip().isdigit() else seed
        await bot.run_command(
            interaction, "settings", {"steps": steps, "guidance": guidance, "size": size, "seed": seed_value}
        )

    commands: list[app_commands.Command[Any, Any, Any] | app_commands.Group] = [persona, post, settings]
    for name, description in _SIMPLE_COMMANDS.items():
        commands.append(_simple_command(bot, name, description))
    return commands


def _simple_command(bot: InteractionHost, name: str, description: str) -> app_commands.Command[Any, Any, Any]:
    async def callback(interaction: discord.Interaction[Any]) -> None:
        await bot.run_command(interaction, name)

    return app_commands.guild_only()(app_commands.Command(name=name, description=description, callback=callback))
