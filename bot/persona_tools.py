"""``persona-studio persona export`` and ``persona-studio eval identity``.

Export writes a persona as a portable folder: ``portrait.png``, ``lora.safetensors`` (the trained
version in use, diffusers' LoRA format with adapter metadata: plain ``load_lora_weights`` reads
it), ``persona.json`` (mix, seed, versions with their training reports) and ``training/`` (the
version's kept images and their captions, ``NNN.png`` + ``NNN.txt``). Eval renders the persona
with a version (or its blend) and prints the identity-score distribution against its reference.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from commands.persona_spec import persona_spec
from storage.blobs import BlobStore, open_blob_store
from storage.db import Database
from storage.models import Persona
from storage.persona_versions import find_version, version_in_use
from storage.repository import Store
from storage.settings import Settings


class ToolError(Exception):
    """A clear message for the command line; nothing was written."""


async def find_persona(store: Store, user: str, name: str) -> Persona:
    platform, sep, platform_id = user.partition(":")
    if not sep or not platform or not platform_id:
        raise ToolError(f"--user must be PLATFORM:ID (e.g. console:console or discord:1234), not {user!r}")
    owner = await store.user(platform, platform_id)
    workspace = await store.home_workspace(owner)  # console: `local`; Discord: the user's personal one
    persona = await store.find_persona_in(workspace.id, name)
    if persona is None:
        names = ", ".join(p.name for p in await store.list_personas_in(workspace.id)) or "none"
        raise ToolError(f"{user}'s workspace has no persona named {name!r} (its personas: {names})")
    return persona


def export_persona(persona: Persona, blobs: BlobStore, out: Path) -> list[Path]:
    """Write the export folder; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if persona.reference_key:
        written.append(_copy(blobs, persona.reference_key, out / "portrait.png"))
    version = version_in_use(persona)
    if version is not None:
        written.append(_copy(blobs, version["lora_key"], out / "lora.safetensors"))
        folder = out / "training"
        folder.mkdir(exist_ok=True)
        kept = [c for c in version["report"].get("candidates", []) if c.get("kept")]
        for i, candidate in enumerate(kept, start=1):
            written.append(_copy(blobs, candidate["key"], folder / f"{i:03d}.png"))
            (folder / f"{i:03d}.txt").write_text(candidate["caption"] + "\n", encoding="utf-8")
            written.append(folder / f"{i:03d}.txt")
    manifest = {
        "name": persona.name,
        "archetype": persona.archetype,
        "seed": persona.seed,
        "lora_mix": persona.lora_mix,
        "version_in_use": f"v{version['version']}" if version else "blend",
        "lora_file": "lora.safetensors" if version else None,
        "trigger": version["report"].get("trigger") if version else None,
        "versions": persona.versions or [],
    }
    (out / "persona.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
    written.append(out / "persona.json")
    return written


def _copy(blobs: BlobStore, key: str, target: Path) -> Path:
    shutil.copyfile(blobs.path(key), target)
    return target


def parse_version(word: str | None, persona: Persona) -> int:
    """``v<N>`` or ``blend`` (None: the version in use) as a version number (0 = blend)."""
    if word is None:
        return int(persona.active_version or 0)
    if word.lower() == "blend":
        return 0
    number = word.lower().removeprefix("v")
    if not number.isdigit() or find_version(persona.versions, int(number)) is None:
        known = ", ".join(["blend", *(f"v{v['version']}" for v in persona.versions or [])])
        raise ToolError(f"{persona.name} has no version {word!r} (known: {known})")
    return int(number)


def check_out(out: Path, *, force: bool, blob_dir: Path | None = None) -> None:
    """Refuse (:class:`ToolError`, nothing written) an ``--out`` that is a file, that cannot be
    written, that is the blob folder (or inside it), or that is a folder holding files already
    (``force`` merges into such a folder)."""
    target = out.expanduser().resolve()
    if target.exists() and not target.is_dir():
        raise ToolError(f"--out {out} is a file, not a folder")
    if blob_dir is not None:
        blobs = blob_dir.expanduser().resolve()
        if target == blobs or blobs in target.parents:
            raise ToolError(f"--out {out} is inside the blob folder {blob_dir}; choose another folder")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise ToolError(f"--out {out} is not empty; choose an empty or new folder (or --force to merge into it)")
    existing = next((p for p in (target, *target.parents) if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ToolError(f"--out {out} cannot be written ({existing or target} is not a writable folder)")


async def run_export(settings: Settings, name: str, user: str, out: Path, *, force: bool = False) -> list[Path]:
    check_out(out, force=force, blob_dir=settings.blob_dir)
    db = Database(settings.database_url)
    try:
        await db.upgrade()  # as every command does on start (a fresh database has no tables)
        persona = await find_persona(Store(db), user, name)
    finally:
        await db.dispose()
    try:
        return export_persona(persona, open_blob_store(settings), out)
    except OSError as exc:  # e.g. the disk filled up: a clear line, not a traceback
        raise ToolError(f"could not write {out}: {exc.strerror or exc}") from exc


async def run_eval(settings: Settings, name: str, user: str, renders: int, version: str | None) -> dict[str, Any]:
    import asyncio

    from engine.render.engine import Engine
    from engine.training.evaluation import evaluate_identity

    db = Database(settings.database_url)
    try:
        persona = await find_persona(Store(db), user, name)
    finally:
        await db.dispose()
    number = parse_version(version, persona)
    spec = persona_spec(persona, number)
    engine = Engine.from_settings(settings, open_blob_store(settings))
    result = await asyncio.to_thread(evaluate_identity, engine, spec, renders)
    return {"persona": persona.name, "version": f"v{number}" if number else "blend", **result}
