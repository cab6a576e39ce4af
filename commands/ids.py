"""Ids typed by users (``/thread 12``, a card key ``approve:12``): parsed once, bounded to the
column's range. Storage ids (posts, turns) are 32-bit ``Integer`` columns on PostgreSQL; a number
outside them names nothing, and asking the database about it would fail (OverflowError on
SQLite, DBAPIError on PostgreSQL) instead of answering "no such post"."""

from __future__ import annotations

import re

#: the largest value of a storage ``Integer`` primary key (PostgreSQL int4)
MAX_DB_ID = 2**31 - 1
_ASCII_DIGITS = re.compile(r"[0-9]{1,19}")


def parse_id(text: str | int | None) -> int | None:
    """The id in ``text`` ("12", "#12", 12), or None when it is not one: only ASCII digits
    (``"²"`` passes ``str.isdigit`` but is no id), from 1 to :data:`MAX_DB_ID`."""
    if isinstance(text, bool) or text is None:
        return None
    if isinstance(text, int):
        return text if 1 <= text <= MAX_DB_ID else None
    raw = text.strip().removeprefix("#").strip()
    if not _ASCII_DIGITS.fullmatch(raw):
        return None
    value = int(raw)
    return value if 1 <= value <= MAX_DB_ID else None
