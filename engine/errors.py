"""Exceptions shared by the engine's modules (importable from anywhere in engine/ without a cycle)."""

from __future__ import annotations


class JobCancelled(Exception):
    """The job's cancel flag was set; the engine raises it at its next step."""


class PhotoHasNoFace(ValueError):
    """A persona photo in which the face embedder finds no face; ``str(exc)`` is meant for the user."""
