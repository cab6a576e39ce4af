"""The job queues: ``images`` (personas, posts, edits, regenerations), ``video`` (clips) and
``training`` (persona LoRAs). A still takes seconds, a clip or a training run minutes: each kind
has its own arq queue, so a host can dedicate workers (``WORKER_QUEUES=video`` on a GPU kept for
clips) and an image turn never waits in line behind a long job. The images queue keeps arq's
default name (queues from before the split go on working); the others are named after it.
"""

from __future__ import annotations

from typing import Any

from arq.constants import default_queue_name

from engine.specs import JobKind
from storage.settings import WORKER_QUEUE_NAMES

IMAGES, VIDEO, TRAINING = WORKER_QUEUE_NAMES
#: queue -> arq's redis key of it
ARQ_QUEUES: dict[str, str] = {
    IMAGES: default_queue_name,
    VIDEO: f"{default_queue_name}:{VIDEO}",
    TRAINING: f"{default_queue_name}:{TRAINING}",
}
_KIND_QUEUES = {JobKind.VIDEO: VIDEO, JobKind.TRAIN_PERSONA: TRAINING}


def queue_of(kind: str | JobKind) -> str:
    """The queue a job of ``kind`` goes to."""
    return _KIND_QUEUES.get(JobKind(kind), IMAGES)


def queue_of_spec(spec_json: dict[str, Any]) -> str:
    return queue_of(spec_json.get("kind", JobKind.GENERATE))


def arq_queue_of(kind: str | JobKind) -> str:
    """arq's queue name (redis key) for a job of ``kind``."""
    return ARQ_QUEUES[queue_of(kind)]
