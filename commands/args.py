"""The binder: a row's declared arguments, from a text line's words or a Discord interaction's options.

Text front ends send the words after the command (``Event.args``): positional words in the order
the row declares them, and ``key=value`` words for any argument. Discord sends typed options
(``Event.options``; a group's subcommand as ``action``). Either way :func:`bind` returns the
row's arguments converted to their kind, checked against their bounds and choices, defaults
filled in; a bad value raises :class:`~commands.validation.InputError` with the row's text for it.
The usage line of ``/help`` and of every refusal is made here from the row, too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from commands.command import Arg, Command
from commands.validation import InputError

#: the Discord option that names a group's subcommand
ACTION = "action"


def usage(row: Command, group: Command | None = None) -> str:
    """``/persona train <name> [images=N] [steps=S] [rank=R]``, from the row's arguments:
    leading positionals, then ``key=value`` ones, then a positional that takes the rest of the line."""
    if not row.args and row.subcommands:
        return f"/{row.name} " + " | ".join(usage(sub, row).partition(" ")[2] for sub in row.subcommands)
    head = [arg for arg in row.args if arg.positional and arg.takes != "text"]
    keyed = [arg for arg in row.args if not arg.positional]
    tail = [arg for arg in row.args if arg.positional and arg.takes == "text"]
    words = [f"/{group.name} {row.name}" if group else f"/{row.name}"]
    for arg in head + keyed + tail:
        if arg.shown:
            words.append(arg.shown)
        elif arg.kind == "attachment":
            continue
        elif arg.positional:
            words.append(f"<{arg.name}>" if arg.required else f"[{arg.name}]")
        else:
            words.append(f"[{arg.name}=…]")
    return " ".join(words)


def resolve(command: Command, event_options: Mapping[str, Any], line: str) -> tuple[Command, list[str]]:
    """The row to run (for a group: the subcommand named by the option or the first word) and the
    words left for it."""
    words = line.split()
    if not command.subcommands:
        return command, words
    action = event_options.get(ACTION)
    if action is None:
        action, words = (words[0], words[1:]) if words else (command.default_subcommand, [])
    sub = command.subcommand(str(action))
    if sub is None:
        raise InputError(f"usage: {usage(command)}")
    return sub, words


def bind(
    row: Command, words: Sequence[str], options: Mapping[str, Any], group: Command | None = None
) -> dict[str, Any]:
    """The row's arguments (attachments aside: they stay on the event) as typed keyword arguments."""
    raw = _from_words(row, words, group)
    raw.update({k: v for k, v in options.items() if k != ACTION and v is not None})
    bound: dict[str, Any] = {}
    for arg in row.args:
        if arg.kind == "attachment":
            continue
        value = raw.get(arg.name)
        if value is None or (isinstance(value, str) and not value.strip()):
            if arg.required:
                raise InputError(arg.missing or f"usage: {usage(row, group)}")
            bound[arg.name] = arg.default
            continue
        bound[arg.name] = convert(arg, value)
    return bound


def convert(arg: Arg, value: Any) -> Any:
    """One value, of the argument's kind, in its bounds and choices; else the argument's refusal."""
    text = str(value).strip()
    low, high = arg.min, arg.max
    if arg.choices:
        chosen = dict(arg.choices).get(text.lower())
        if chosen is None:
            listed = ", ".join(dict.fromkeys(v for _, v in arg.choices))
            raise InputError(_refusal(arg, value, f"{arg.name} must be one of: {listed}"))
        return chosen
    if arg.kind in ("int", "float"):
        numbers = f" from {low:g} to {high:g}" if low is not None and high is not None else ""
        try:
            number: float = int(text) if arg.kind == "int" else float(text)
        except (ValueError, OverflowError):
            raise InputError(_refusal(arg, value, f"{arg.name} must be a number{numbers} (got '{text}')")) from None
        if not math.isfinite(number) or (low is not None and number < low) or (high is not None and number > high):
            raise InputError(_refusal(arg, value, f"{arg.name} must be{numbers} (got {text})"))
        return number
    if high is not None and len(text) > high:
        raise InputError(
            _refusal(arg, value, f"the {arg.name} has {len(text)} characters; at most {high:g} are allowed")
        )
    if low is not None and len(text) < low:
        raise InputError(_refusal(arg, value, f"the {arg.name} needs at least {low:g} characters"))
    return text


def _refusal(arg: Arg, value: Any, fallback: str) -> str:
    if not arg.error:
        return fallback
    low = "" if arg.min is None else f"{arg.min:g}"
    high = "" if arg.max is None else f"{arg.max:g}"
    return arg.error.format(name=arg.name, value=value, low=low, high=high)


def _from_words(row: Command, words: Sequence[str], group: Command | None) -> dict[str, str]:
    """Positional words in the row's order and ``key=value`` words, as strings."""
    keyed: dict[str, Arg] = {}
    for arg in row.args:
        if arg.kind != "attachment":
            keyed.update({key.lower(): arg for key in (arg.name, *arg.aliases)})
    positionals = [arg for arg in row.args if arg.positional]
    rest_at = next((i for i, arg in enumerate(positionals) if arg.takes != "word"), None)
    head = positionals if rest_at is None else positionals[:rest_at]
    text_rest = rest_at is not None and positionals[rest_at].takes == "text"
    raw: dict[str, str] = {}
    loose: list[str] = []
    prefixed = {arg.prefix: arg for arg in row.args if arg.prefix}
    for index, word in enumerate(words):
        if text_rest and len(loose) > len(head):  # the prompt has begun: everything is its text
            loose.extend(words[index:])
            break
        marked = next((a for p, a in prefixed.items() if word.startswith(p) and len(word) > len(p)), None)
        if marked is not None and marked.name not in raw:  # ``#2``: image 2
            raw[marked.name] = word[len(marked.prefix) :]
            continue
        key, sep, value = word.partition("=")
        if sep and key.isidentifier() and value:
            arg = keyed.get(key.lower())
            if arg is None:
                raise InputError(f"unknown option {key!r}; usage: {usage(row, group)}")
            raw[arg.name] = value
        else:
            loose.append(word)
    for arg, word in zip(head, loose, strict=False):
        raw.setdefault(arg.name, word)
    remaining = loose[len(head) :]
    if rest_at is None:
        if remaining:
            raise InputError(f"usage: {usage(row, group)}")
        return raw
    tail = positionals[rest_at + 1 :]
    cut = max(len(remaining) - len(tail), 0)
    for arg, word in zip(tail, remaining[cut:], strict=False):
        raw.setdefault(arg.name, word)
    if remaining[:cut]:
        name, rest = positionals[rest_at].name, " ".join(remaining[:cut])
        # ``motion=she turns her head``: a text argument given as key=value takes the words after it too
        raw[name] = f"{raw[name]} {rest}" if name in raw else rest
    return raw
