"""The one rule for names a user compares (persona names): NFKC, then Unicode case folding, in
Python, so SQLite (whose ``lower()`` folds ASCII only) and PostgreSQL agree. The folded form is
stored in its own column; lookups and the unique index compare it exactly."""

from __future__ import annotations

import unicodedata


def name_key(name: str) -> str:
    """``"Élodie"``, ``"ÉLODIE"`` and ``"e\\u0301lodie"`` share one key; so do ``"Straße"`` and ``"STRASSE"``."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name.strip()).casefold())
