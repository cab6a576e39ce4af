"""Every row of the command table, walked: the text parser, ``/help``, the Discord slash commands and
the WeCom aliases agree with the row, and every declared argument binds to the same typed value from
a text line and from Discord options (a bad value: the row's refusal, from both)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import discord
import pytest
from discord import app_commands

from bot.discord.slash import build_commands, discord_args
from commands.args import ACTION, bind, resolve, usage
from commands.command import Arg, Command
from commands.events import EventKind
from commands.parser import parse_text
from commands.table import COMMANDS, help_text
from commands.validation import InputError

HANDLERS = Path(__file__).resolve().parents[2] / "commands" / "handlers"
#: Discord's option types (application command option type)
OPTION_TYPE = {"str": 3, "int": 4, "float": 10, "attachment": 11}


def _rows() -> list[tuple[Command, Command | None]]:
    """Every runnable row with its group (None for a top-level command)."""
    found: list[tuple[Command, Command | None]] = []
    for command in COMMANDS:
        found += [(sub, command) for sub in command.subcommands] or [(command, None)]
    return found


ROWS = _rows()
ROW_IDS = [f"{group.name} {row.name}" if group else row.name for row, group in ROWS]


class _Host:
    conversation: Any = None

    async def run_command(self, *args: Any, **kwargs: Any) -> None: ...
    async def on_result_button(self, *args: Any, **kwargs: Any) -> None: ...
    async def on_role_button(self, *args: Any, **kwargs: Any) -> None: ...


@pytest.fixture(scope="module")
def slash() -> dict[str, dict[str, Any]]:
    tree = app_commands.CommandTree(discord.Client(intents=discord.Intents.none()))
    built = build_commands(_Host(), [])  # type: ignore[arg-type]
    return {command.name: command.to_dict(tree) for command in built}


@pytest.mark.parametrize(("row", "group"), ROWS, ids=ROW_IDS)
def test_each_row_has_a_handler_taking_exactly_its_arguments(row: Command, group: Command | None) -> None:
    assert row.handler is not None
    parameters = list(inspect.signature(row.handler).parameters.values())
    assert [p.name for p in parameters[:2]] == ["conv", "ctx"]
    keywords = {p.name for p in parameters[2:]}
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters[2:])
    assert keywords == {arg.name for arg in row.args if arg.kind != "attachment"}


@pytest.mark.parametrize(("row", "group"), ROWS, ids=ROW_IDS)
def test_the_text_parser_finds_the_row_by_name_and_alias(row: Command, group: Command | None) -> None:
    top = group or row
    for word in (top.name, *top.aliases):
        parsed = parse_text(f"/{word}")
        assert (parsed.kind, parsed.command) == (EventKind.COMMAND, top.name)
        if not word.isascii():  # WeCom: Chinese aliases work without the slash
            assert parse_text(f"{word} x").command == top.name
    if group is not None:
        for word in (row.name, *row.aliases):
            assert resolve(group, {}, f"{word} {'x ' * 3}")[0] is row
            assert resolve(group, {ACTION: row.name}, "")[0] is row


@pytest.mark.parametrize(("row", "group"), ROWS, ids=ROW_IDS)
def test_help_shows_the_rows_usage_and_aliases(row: Command, group: Command | None) -> None:
    text = help_text()
    top = group or row
    if top.platforms is not None and not top.platforms:
        return  # a button's command: not typed, not in /help
    line = usage(row, group)
    assert line in text
    for arg in row.args:
        if arg.kind != "attachment":
            assert re.search(rf"[<\[ ]{re.escape(arg.shown or arg.name)}", line), (arg.name, line)
    wecom = text.splitlines()[-1]
    assert all(alias in wecom for alias in top.aliases if not alias.isascii())


@pytest.mark.parametrize(("row", "group"), ROWS, ids=ROW_IDS)
def test_discord_offers_the_rows_options_with_their_bounds(
    slash: dict[str, dict[str, Any]], row: Command, group: Command | None
) -> None:
    top = group or row
    if not top.offered_on("discord"):
        assert top.name not in slash
        return
    built = slash[top.name]
    if group is not None:
        (built,) = [option for option in built["options"] if option["name"] == row.name]
        assert built["type"] == 1  # a subcommand
    assert built["description"] == row.summary
    options = built.get("options", [])
    args = discord_args(row)
    assert [o["name"] for o in options] == [a.name for a in sorted(args, key=lambda a: not a.required)]
    for option in options:
        arg = next(a for a in args if a.name == option["name"])
        assert option["type"] == OPTION_TYPE[arg.kind]
        assert option["required"] == arg.required
        assert option["description"] == arg.description
        low, high = ("min_value", "max_value") if arg.kind in ("int", "float") else ("min_length", "max_length")
        assert option.get(low) == arg.min and option.get(high) == arg.max


def _good(arg: Arg) -> Any:
    """A value in bounds, typed as a Discord option would carry it."""
    if arg.choices:
        return arg.choices[-1][1]
    if arg.kind == "int":
        return int(arg.max if arg.max is not None else 7)
    if arg.kind == "float":
        return float(arg.max if arg.max is not None else 1.5)
    if arg.takes != "word":
        return "Mia Rose"
    return "a" * int(arg.min or 3)


def _line(row: Command, values: dict[str, Any]) -> list[str]:
    """The text words of ``values``: positionals in the row's order, the others as key=value."""
    words = [f"{name}={value}" for name, value in values.items() if not _arg(row, name).positional]
    positionals = [str(values[a.name]) for a in row.args if a.positional and a.name in values]
    text_rest = [a for a in row.args if a.positional and a.takes == "text"]
    if text_rest:  # options before the prompt
        return positionals[:-1] + words + positionals[-1:]
    return " ".join(positionals + words).split()


def _arg(row: Command, name: str) -> Arg:
    return next(arg for arg in row.args if arg.name == name)


def _bind(row: Command, group: Command | None, words: list[str], options: dict[str, Any]) -> Any:
    try:
        return bind(row, words, options, group)
    except InputError as exc:
        return f"refused: {exc}"


@pytest.mark.parametrize(("row", "group"), ROWS, ids=ROW_IDS)
def test_every_argument_binds_alike_from_words_and_options(row: Command, group: Command | None) -> None:
    args = [arg for arg in row.args if arg.kind != "attachment"]
    required = {arg.name: _good(arg) for arg in args if arg.required}
    if args:  # nothing but the required ones: defaults for the rest
        bound = bind(row, _line(row, required), {}, group)
        assert bound == {**{a.name: a.default for a in args}, **required}
        assert bind(row, [], {ACTION: row.name, **required}, group) == bound
    for arg in args:
        values = {**required, arg.name: _good(arg)}
        from_words = _bind(row, group, _line(row, values), {})
        assert from_words == _bind(row, group, [], values)
        assert from_words[arg.name] == values[arg.name]
        assert type(from_words[arg.name]) is type(values[arg.name])
        if arg.required:  # missing: the row's refusal
            missing = {k: v for k, v in required.items() if k != arg.name}
            refusal = arg.missing or f"usage: {usage(row, group)}"
            assert _bind(row, group, [], missing) == f"refused: {refusal}"


@pytest.mark.parametrize(("row", "group"), ROWS, ids=ROW_IDS)
def test_a_value_out_of_bounds_gets_the_rows_refusal(row: Command, group: Command | None) -> None:
    required = {arg.name: _good(arg) for arg in row.args if arg.required and arg.kind != "attachment"}
    for arg in row.args:
        if arg.kind == "attachment" or (arg.max is None and not arg.choices):
            continue
        if arg.choices:
            bad: Any = "nonsense"
        elif arg.kind == "str":
            bad = "x" * (int(arg.max or 0) + 1)
        else:
            bad = int(arg.max or 0) + 1
        values = {**required, arg.name: bad}
        refused = _bind(row, group, _line(row, values), {})
        assert isinstance(refused, str) and refused.startswith("refused: "), (arg.name, refused)
        assert refused == _bind(row, group, [], values)
        if arg.error:
            low = "" if arg.min is None else f"{arg.min:g}"
            high = "" if arg.max is None else f"{arg.max:g}"
            assert refused == "refused: " + arg.error.format(name=arg.name, value=bad, low=low, high=high)


def test_an_unknown_option_or_a_stray_word_is_refused_with_the_usage() -> None:
    row = COMMANDS[0].subcommand("train")
    assert row is not None
    assert (
        _bind(row, COMMANDS[0], ["Mia", "lr=1"], {})
        == f"refused: unknown option 'lr'; usage: {usage(row, COMMANDS[0])}"
    )
    listing = COMMANDS[0].subcommand("list")
    assert listing is not None
    assert _bind(listing, COMMANDS[0], ["stray"], {}) == f"refused: usage: {usage(listing, COMMANDS[0])}"


def test_a_prompt_keeps_its_words_once_it_has_begun() -> None:
    post = next(command for command in COMMANDS if command.name == "post")
    bound = bind(post, "Mia n=2 a latte, ratio=3:4 please".split(), {})
    assert (bound["persona"], bound["count"], bound["prompt"]) == ("Mia", 2, "a latte, ratio=3:4 please")


def test_no_handler_reads_raw_options_or_types_a_usage_line() -> None:
    for path in HANDLERS.glob("*.py"):
        source = path.read_text()
        assert "event.options" not in source and "event.args" not in source, path.name
        assert "usage: /" not in source, path.name
