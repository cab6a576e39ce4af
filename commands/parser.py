"""The text command grammar shared by the console and WeCom (see shared/DESIGN.md).

``parse_text`` turns one line of text into (kind, command, args): ``/post mia count=2 latte``
is the command ``post`` with args ``mia count=2 latte``; WeCom's Chinese aliases map to the same
names; anything not starting with a command word is a plain message (an edit instruction
inside a post thread).
"""

from __future__ import annotations

from dataclasses import dataclass

from commands.events import EMOJI_BUTTON, EventKind

COMMANDS = (
    "persona",
    "post",
    "approve",
    "regen",
    "undo",
    "cancel",
    "history",
    "export",
    "status",
    "settings",
    "help",
)

ALIASES: dict[str, str] = {
    # English shorthands
    "regenerate": "regen",
    "ok": "approve",
    "thread": "thread",  # console only: switch thread
    "threads": "threads",
    # WeCom aliases (DESIGN.md)
    "人设": "persona",
    "发帖": "post",
    "通过": "approve",
    "重来": "regen",
    "撤销": "undo",
    "取消": "cancel",
    "历史": "history",
    "导出": "export",
    "状态": "status",
    "设置": "settings",
    "帮助": "help",
}

#: Chinese sub-commands of /persona
PERSONA_ACTION_ALIASES = {"创建": "create", "列表": "list", "查看": "show", "删除": "delete"}


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
    word = head[1:] if head.startswith(("/", "／")) else head
    lowered = word.lower()
    if head.startswith(("/", "／")):
        name = ALIASES.get(lowered, lowered)
        return ParsedText(EventKind.COMMAND, name, rest.strip())
    if word in ALIASES and ALIASES[word] in COMMANDS and not word.isascii():
        return ParsedText(EventKind.COMMAND, ALIASES[word], rest.strip())
    return ParsedText(EventKind.MESSAGE, None, stripped)


def split_options(args: str) -> tuple[dict[str, str], list[str]]:
    """Split ``count=2 steps=8 a latte`` into ({count: 2, steps: 8}, [a, latte]).

    Only leading ``key=value`` words are options, so a prompt may contain ``=`` later on.
    """
    options: dict[str, str] = {}
    words = args.split()
    rest_start = 0
    for index, word in enumerate(words):
        key, sep, value = word.partition("=")
        if sep and key.isidentifier() and value:
            options[key.lower()] = value
            rest_start = index + 1
        else:
            break
    return options, words[rest_start:]
