"""Helpers shared by the repository's modules: its errors, the not-found check, a new turn row."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from storage.models import Turn, TurnStatus

T = TypeVar("T")


class DuplicateName(ValueError):
    pass


class NotFound(LookupError):
    pass


def found(obj: T | None, what: str, ident: object) -> T:
    if obj is None:
        raise NotFound(f"no {what} {ident}")
    return obj


def new_turn(
    *,
    thread_id: int,
    parent_id: int | None,
    kind: str,
    instruction: str = "",
    seed: int = 0,
    params: dict[str, Any] | None = None,
    job_id: str | None = None,
    image_keys: Sequence[str] = (),
    status: TurnStatus = TurnStatus.PENDING,
    references: Sequence[dict[str, Any]] = (),
) -> Turn:
    return Turn(
        thread_id=thread_id,
        parent_id=parent_id,
        kind=kind,
        instruction=instruction,
        seed=seed,
        params=params or {},
        job_id=job_id,
        image_keys=list(image_keys),
        identity_scores=[],
        references=[dict(r) for r in references],
        status=status,
        approved=False,
    )
