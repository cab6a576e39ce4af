"""A persona's trained versions: plain data in ``personas.versions``, one in use.

Version 0 is the persona's blend (its LoRA mix); ``/persona train`` appends version N (1, 2, ...)
as ``{"version", "lora_key", "job_id", "created_at", "report"}``; ``personas.active_version``
names the one renders use (a new version is put in use at once; ``/persona use`` switches).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from storage.models import utcnow


def new_version(versions: Sequence[dict[str, Any]] | None, job_id: str, report: dict[str, Any]) -> dict[str, Any]:
    """Column values that add the trained version of ``job_id`` (its report) and put it in use."""
    existing = [dict(v) for v in versions or []]
    number = max((int(v["version"]) for v in existing), default=0) + 1
    entry = {
        "version": number,
        "lora_key": report.get("lora_key"),
        "job_id": job_id,
        "created_at": utcnow().isoformat(timespec="seconds"),
        "report": report,
    }
    return {"versions": [*existing, entry], "active_version": number}


def find_version(versions: Sequence[dict[str, Any]] | None, number: int) -> dict[str, Any] | None:
    """Version ``number`` (>= 1) of a persona's ``versions``, or ``None``."""
    return next((dict(v) for v in versions or [] if int(v["version"]) == number), None)


def version_in_use(persona: Any) -> dict[str, Any] | None:
    """The trained version a persona renders with, or ``None`` for its blend."""
    number = int(getattr(persona, "active_version", 0) or 0)
    return find_version(getattr(persona, "versions", None), number) if number else None
