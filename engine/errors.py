"""Exceptions shared by the engine's modules (importable from anywhere in engine/ without a cycle)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class JobCancelled(Exception):
    """The job's cancel flag was set; the engine raises it at its next step."""


class PhotoHasNoFace(ValueError):
    """A persona photo in which the face embedder finds no face; ``str(exc)`` is meant for the user."""


class NoTrainingCandidates(ValueError):
    """A persona training none of whose candidate renders matched the persona's face: nothing to
    train on. ``str(exc)`` is meant for the user; ``checked`` (renders), ``rejected_by_reason``
    (counts) and ``detail`` (each candidate's verdict) are for the log."""

    def __init__(
        self,
        message: str,
        *,
        checked: int = 0,
        rejected_by_reason: Mapping[str, int] | None = None,
        detail: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.checked = checked
        self.rejected_by_reason = dict(rejected_by_reason or {})
        self.detail = list(detail)
