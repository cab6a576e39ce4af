"""Texts the conversation sends (``/help`` comes from commands.table): the turn tree, job states, progress bars."""

from __future__ import annotations

from collections.abc import Sequence

from storage.activity import ActivityEntry
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
    return f"#{turn.id} {turn.kind}: {what} — {scores} [{turn.status}]{flags}"


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


#: how the activity log names each step
ACTIVITY_WORDS = {
    "created": "created the post",
    "edited": "edited",
    "regenerated": "regenerated",
    "undone": "undid back to",
    "submitted": "submitted for review",
    "approved": "approved",
    "sent_back": "requested changes",
    "cancelled": "cancelled the post",
}


def render_activity(entries: Sequence[ActivityEntry]) -> str:
    """A post's activity log, one line per step: when, who, what, which turn, detail."""
    lines = []
    for entry in entries:
        turn = f" turn #{entry.turn_id}" if entry.turn_id else ""
        detail = f": {entry.detail}" if entry.detail else ""
        words = ACTIVITY_WORDS.get(str(entry.action), str(entry.action))
        lines.append(f"  {entry.at:%Y-%m-%d %H:%M} {entry.who or '(removed user)'} {words}{turn}{detail}")
    return "\n".join(lines) if lines else "  nothing yet"
