"""The text command grammar shared by the console and WeCom (see shared/DESIGN.md).

``parse_text`` turns one line of text into (kind, command, args): ``/post mia count=2 latte``
is the command ``post`` with args ``mia count=2 latte``; aliases (English and Chinese) come from
the command table; anything not starting with a command word is a plain message (an edit
instruction inside a post thread).
"""

from __future__ import annotations

from dataclasses import dataclass

from commands.events import EMOJI_BUTTON, EventKind
from commands.table import find

__all__ = ["ParsedText", "parse_text"]


@dataclass(frozen=True)
class ParsedText:
    kind: EventKind
    command: str | None
    args: str


def parse_text(text: str) -> ParsedText:
    """Classify one line: a command (with ``/`` or a Chinese alias), a reaction emoji, or text."""
    stripped = text.strip()
    if stripped in EMOJI_BUTTON:
        return ParsedText(EventKind.REACTION, EMOJI_BUTTON[stripped].value, "")
    head, _, rest = stripped.partition(" ")
    if not rest:
        head, _, rest = stripped.partition("\n")
    if head.startswith(("/", "／")):
        word = head[1:].lower()
        command = find(word)
        return ParsedText(EventKind.COMMAND, command.name if command else word, rest.strip())
    command = find(head)
    if command is not None and not head.isascii():  # Chinese aliases work without the slash
        return ParsedText(EventKind.COMMAND, command.name, rest.strip())
    return ParsedText(EventKind.MESSAGE, None, stripped)
