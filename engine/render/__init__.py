"""Rendering: pipeline loading, engine families, references, caches, identity gate, persona slot, speed-ups."""
