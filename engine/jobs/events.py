"""Typed job progress events: one pydantic model per state, each with a ``build``.

Workers publish them on a progress bus (engine.jobs.progress); front ends read them. Redis carries
their JSON (``event.model_dump_json()``) and :func:`parse_event` turns it back into the right
class by its ``state``.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

#: states after which a job changes no more
FINISHED_STATES = frozenset({"done", "failed", "cancelled"})


class JobEvent(BaseModel):
    """What every event carries: the job, its state, when (``time.time()``) and which worker."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    job_id: str
    state: str
    ts: float
    worker: str | None = None  # set by a worker's bus

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES


class Queued(JobEvent):
    state: Literal["queued"] = "queued"
    #: jobs ahead of this one (0 = next); None when unknown
    position: int | None = None

    @classmethod
    def build(cls, job_id: str, *, position: int | None = None) -> Queued:
        return cls(job_id=job_id, ts=time.time(), position=position)


class Running(JobEvent):
    state: Literal["running"] = "running"
    step: int = 0
    total: int = 0
    eta_s: float | None = None
    attempt: int = 0
    #: what the step is doing, when it says more than a step count ("training step 3/20 · loss 0.41")
    note: str | None = None
    #: number of the job's latest live preview (read it with ``bus.previews.get(job_id)``); None: none yet, or
    #: not yet known where this event was made (a reader keeps the highest number it saw)
    preview: int | None = None

    @classmethod
    def build(
        cls,
        job_id: str,
        *,
        step: int = 0,
        total: int = 0,
        eta_s: float | None = None,
        attempt: int = 0,
        note: str | None = None,
        preview: int | None = None,
    ) -> Running:
        return cls(
            job_id=job_id, ts=time.time(), step=step, total=total, eta_s=eta_s, attempt=attempt, note=note,
            preview=preview,
        )  # fmt: skip


class Done(JobEvent):
    state: Literal["done"] = "done"
    seconds: float = 0.0

    @classmethod
    def build(cls, job_id: str, *, seconds: float = 0.0) -> Done:
        return cls(job_id=job_id, ts=time.time(), seconds=seconds)


class Failed(JobEvent):
    state: Literal["failed"] = "failed"
    error: str = ""

    @classmethod
    def build(cls, job_id: str, *, error: str = "") -> Failed:
        return cls(job_id=job_id, ts=time.time(), error=error)


class Cancelled(JobEvent):
    state: Literal["cancelled"] = "cancelled"
    error: str = "cancelled"

    @classmethod
    def build(cls, job_id: str, *, error: str = "cancelled") -> Cancelled:
        return cls(job_id=job_id, ts=time.time(), error=error)


AnyJobEvent = Annotated[Queued | Running | Done | Failed | Cancelled, Field(discriminator="state")]
_ADAPTER: TypeAdapter[AnyJobEvent] = TypeAdapter(AnyJobEvent)


def parse_event(raw: str | bytes | dict[str, Any]) -> AnyJobEvent:
    """The typed event of a JSON text or a dict (pydantic's ValidationError if it is none)."""
    data = json.loads(raw) if isinstance(raw, str | bytes) else raw
    return _ADAPTER.validate_python(data)
