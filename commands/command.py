"""What a command is: its name, aliases, typed arguments, descriptions and handler.

The rows themselves are in :mod:`commands.table`; :mod:`commands.args` binds an event's words or
options to a row's arguments.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

#: ``async def handler(conv, ctx, **arguments) -> list[Action]``; arguments are the row's, typed
Handler = Callable[..., Awaitable[list[Any]]]
ArgKind = Literal["str", "int", "float", "attachment"]
#: how a positional text argument takes words: one word, the remaining non-option words, or the
#: rest of the line from its first word on (``key=value`` words included: a prompt)
Takes = Literal["word", "words", "text"]


@dataclass(frozen=True)
class Arg:
    """A typed argument: a Discord option; in text front ends a word in order (``positional``) or
    ``key=value`` (any argument can be given as ``key=value``)."""

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
    #: text front ends: a word in order (see ``Command.args`` order), not only ``key=value``
    positional: bool = False
    takes: Takes = "word"
    #: accepted words (compared lower-cased) -> the value bound
    choices: tuple[tuple[str, str], ...] = ()
    #: other ``key=`` names in text front ends
    aliases: tuple[str, ...] = ()
    #: the refusal for a bad value; ``{name}``, ``{value}``, ``{low}``, ``{high}`` are filled in
    error: str = ""
    #: the refusal when a required argument is missing (default: the row's usage)
    missing: str = ""
    #: text front ends: a word starting with this (``#2``) binds the rest of the word to this argument
    prefix: str = ""
    #: offered in text front ends only (not a Discord option)
    text_only: bool = False
    #: how ``/help`` shows it (default ``<name>``, ``[name]`` or ``[name=…]``; attachments: not shown)
    shown: str = ""


@dataclass(frozen=True)
class Command:
    name: str
    summary: str  # one line, English: help and Discord's description
    summary_zh: str  # one line, Chinese: WeCom's help
    aliases: tuple[str, ...] = ()
    args: tuple[Arg, ...] = ()
    subcommands: tuple[Command, ...] = ()
    handler: Handler | None = None  # a group's rows have theirs; the group itself has none
    #: a group: the subcommand run when none is named (``/persona`` lists)
    default_subcommand: str = ""
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
