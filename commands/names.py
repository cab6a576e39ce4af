"""The rule for names users give (personas, products): 1-40 letters, digits, spaces, '-', '_' or
'.', at least one letter or digit, in one script.

Names are taken in NFC (a decomposed ``É`` — ``E`` + U+0301 — is the same name as the composed
one: accepted at create as it is at show, which compares ``storage.names.name_key``). A name that
mixes Latin with Cyrillic or Greek letters, or is written only in Cyrillic/Greek letters that look
Latin (``мор``, ``сир``), is refused: it would look like another name in a list.
"""

from __future__ import annotations

import re
import unicodedata

from commands.validation import InputError

NAME_RE = re.compile(r"^[\w\-. ]{1,40}$")
#: scripts whose letters are confused with one another
CONFUSED_SCRIPTS = frozenset({"LATIN", "CYRILLIC", "GREEK"})
#: Cyrillic and Greek letters that look like Latin ones
LATIN_LOOKALIKES = frozenset("аеорсухіјѕԁԛԝвнкмтАЕОРСУХІЈЅВНКМТΑΒΕΖΗΙΚΜΝΟΡΤΥΧαοιυνρκ")


def rule(what: str) -> str:
    return f"a {what} name has 1-40 letters, digits, spaces, '-', '_' or '.'"


def check_name(name: str, what: str) -> str:
    """``name`` in NFC if it follows the rule, else :class:`InputError` saying why."""
    name = unicodedata.normalize("NFC", name.strip())
    if not NAME_RE.match(name) or not any(c.isalnum() for c in name):
        raise InputError(rule(what) + " (at least one letter or digit)")
    scripts = {_script(c) for c in name if c.isalpha()} & CONFUSED_SCRIPTS
    if len(scripts) > 1:
        raise InputError(f"a {what} name uses one alphabet: this one mixes {' and '.join(sorted(scripts)).lower()}")
    letters = [c for c in name if c.isalpha()]
    if scripts and scripts != {"LATIN"} and letters and all(c in LATIN_LOOKALIKES for c in letters):
        raise InputError(f"a {what} name may not look like a Latin one written in other letters")
    return name


def _script(char: str) -> str:
    try:
        return unicodedata.name(char).split(" ", 1)[0]
    except ValueError:
        return ""
