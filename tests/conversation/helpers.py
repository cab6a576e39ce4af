"""Small helpers for driving a conversation in tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bot.console import ConsoleFrontEnd
from commands.events import Action, Progress, Reply
from storage.models import Turn
from storage.repository import Store


async def job_spec(store: Store, turn: Turn) -> dict[str, Any]:
    """The JSON spec of the job that rendered ``turn`` (context and targets live there)."""
    job = await store.job_for_turn(turn.id)
    assert job is not None
    return job.spec


def queued(actions: Sequence[Action]) -> list[str]:
    return [a.job_id for a in actions if isinstance(a, Progress) and a.state == "queued"]


async def run(front: ConsoleFrontEnd, line: str) -> list[Action]:
    """Send a line and wait until every job it queued has been delivered."""
    actions = await front.send(line)
    for job_id in queued(actions):
        await front.wait_job(job_id, limit_s=120)
    return actions


def texts(actions: Sequence[Action]) -> str:
    return "\n".join(a.text for a in actions if isinstance(a, Reply))


def errors(actions: Sequence[Action]) -> list[str]:
    return [a.text for a in actions if isinstance(a, Reply) and a.private and a.text.startswith("⚠️")]
