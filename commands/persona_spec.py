"""A stored persona as the engine's :class:`~engine.specs.PersonaSpec`: the one place it is built."""

from __future__ import annotations

from typing import Any

from engine.specs import PersonaSpec
from storage.persona_versions import find_version, version_in_use


def persona_spec(persona: Any, version: int | None = None) -> PersonaSpec:
    """``persona`` (a storage row) rendering with ``version`` (``None``: the one in use; 0: its blend)."""
    chosen = (
        version_in_use(persona) if version is None else find_version(persona.versions, version) if version else None
    )
    return PersonaSpec(
        persona_id=persona.id,
        archetype=persona.archetype,
        lora_mix=[(str(n), float(w)) for n, w in persona.lora_mix],
        seed=persona.seed,
        reference_key=persona.reference_key,
        embedding=persona.face_embedding,
        photo_key=persona.photo_key,
        version=int(chosen["version"]) if chosen else 0,
        version_lora_key=chosen["lora_key"] if chosen else None,
    )
