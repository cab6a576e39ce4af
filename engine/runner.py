"""TODO(merge): remove. Old name of engine.render_engine (the Engine)."""

from engine.errors import JobCancelled
from engine.render_engine import Engine
from engine.rendering import derive_seed

__all__ = ["Engine", "JobCancelled", "derive_seed"]
