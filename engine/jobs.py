"""TODO(merge): remove. Old name of engine.job_runner (and JobCancelled, now in engine.errors)."""

from engine.errors import JobCancelled
from engine.job_runner import EngineLike, JobRunner, engine_runner_factory

__all__ = ["EngineLike", "JobCancelled", "JobRunner", "engine_runner_factory"]
