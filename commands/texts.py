"""Texts the conversation sends (``/help`` comes from commands.table): the turn tree, job states, progress bars."""

from __future__ import annotations

from collections.abc import Sequence

from commands.regions import describe as describe_region
from storage.models import Turn


def progress_bar(step: int, total: int, width: int = 20) -> str:
    if total <= 0:
        return "[" + "·" * width + "]"
    filled = min(width, round(width * step / total))
    return "[" + "█" * filled + "·" * (width - filled) + f"] {step}/{total}"


def format_score(score: float | None) -> str:
    return "identity n/a" if score is None else f"identity {score:.2f}"


def describe_turn(turn: Turn) -> str:
    what = turn.instruction or "(no instruction)"
    scores = ", ".join(format_score(s) for s in (turn.identity_scores or [])) or "no images yet"
    flags = " ✅" if turn.approved else ""
    region = describe_region(turn.params)
    where = f" ({region})" if region else ""
    return f"#{turn.id} {turn.kind}: {what}{where} — {scores} [{turn.status}]{flags}"


def render_tree(turns: Sequence[Turn], current_id: int | None) -> str:
    """The thread's turns as an indented tree, the current turn marked with ▶."""
    children: dict[int | None, list[Turn]] = {}
    for turn in turns:
        children.setdefault(turn.parent_id, []).append(turn)
    lines: list[str] = []

    def walk(parent: int | None, depth: int) -> None:
        for turn in children.get(parent, []):
            marker = "▶ " if turn.id == current_id else "  "
            lines.append(f"{marker}{'   ' * depth}{describe_turn(turn)}")
            walk(turn.id, depth + 1)

    walk(None, 0)
    return "\n".join(lines) if lines else "no turns yet"
