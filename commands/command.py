"""What a command is: its name, aliases, typed arguments, descriptions and handler.

The rows themselves are in :mod:`commands.table`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from commands.context import Ctx
    from commands.events import Action

Handler = Callable[[Any, "Ctx"], Awaitable[list["Action"]]]
ArgKind = Literal["str", "int", "float", "attachment"]


@dataclass(frozen=True)
class Arg:
    """A typed argument: a Discord option, ``key=value`` in text front ends."""

    name: str
    kind: ArgKind
    description: str
    required: bool = False
    #: numbers: the value's bounds; strings: the length's bounds
    min: float | None = None
    max: float | None = None
    default: Any = None
    #: "personas" (the user's persona names), "products" (their product library) or "archetypes"
    autocomplete: str | None = None
    #: attachments: the reference role of the image given in this option (None: not said)
    role: str | None = None


@dataclass(frozen=True)
class Command:
    name: str
    summary: str  # one line, English: help and Discord's description
    summary_zh: str  # one line, Chinese: WeCom's help
    usage: str = ""  # how it is typed in text front ends (help)
    aliases: tuple[str, ...] = ()
    args: tuple[Arg, ...] = ()
    subcommands: tuple[Command, ...] = ()
    handler: Handler | None = None  # subcommands are dispatched by their group's handler
    #: None = every front end; else the platforms that offer it
    platforms: frozenset[str] | None = None
    #: approve/regen/undo/cancel: also a reaction or a button on a result
    result_action: bool = False
    emoji: str = ""

    def offered_on(self, platform: str) -> bool:
        return self.platforms is None or platform in self.platforms

    def subcommand(self, word: str) -> Command | None:
        """The subcommand named (or aliased) ``word``, case-insensitively."""
        word = word.strip().lower()
        for sub in self.subcommands:
            if word == sub.name or word in (a.lower() for a in sub.aliases):
                return sub
        return None
