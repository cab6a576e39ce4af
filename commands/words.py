"""Words of a text command: leading ``key=value`` options, then the free text."""

from __future__ import annotations


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
