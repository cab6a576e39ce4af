"""The export of a post: its approved images and a manifest of every turn, as a zip."""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from typing import Any

from storage.blobs import BlobStore
from storage.models import Thread
from storage.repository import Store


async def build_export(store: Store, blobs: BlobStore, thread: Thread) -> bytes:
    """``images/turn<id>-<n>.png`` for every approved turn, and ``manifest.json`` with every
    turn's instruction, seed, parameters, references and identity scores (approved or not)."""
    turns = await store.turns(thread.id)
    specs = {job.id: job.spec for job in await store.thread_jobs(thread.id, unfinished_only=False)}
    persona = await store.get_persona(thread.persona_id)
    manifest: dict[str, Any] = {
        "post": thread.id,
        "prompt": thread.prompt,
        "persona": {
            "name": persona.name,
            "archetype": persona.archetype,
            "seed": persona.seed,
            "lora_mix": persona.lora_mix,
            "photo_sha256": persona.photo_key,  # a persona made from a consented photo
        },
        "current_turn": thread.current_turn_id,
        "author": (await store.get_user(thread.owner_id)).display_name or "",
        "status": thread.status,
        # who created, edited, submitted, approved or sent back what, when
        "activity": [entry.as_dict() for entry in await store.activity(thread.id)],
        "turns": [],
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for turn in turns:
            files = []
            if turn.approved:
                for index, key in enumerate(turn.image_keys):
                    name = f"images/turn{turn.id}-{index + 1}.png"
                    archive.writestr(name, await asyncio.to_thread(blobs.get, key))
                    files.append(name)
            manifest["turns"].append(
                {
                    "id": turn.id,
                    "parent": turn.parent_id,
                    "kind": turn.kind,
                    "instruction": turn.instruction,
                    "seed": turn.seed,
                    "parameters": turn.params,
                    # what the turn's job edited: its context images and which of them it changed
                    "context": specs.get(turn.job_id or "", {}).get("context_keys", []),
                    "targets": specs.get(turn.job_id or "", {}).get("targets", []),
                    "identity_scores": turn.identity_scores,
                    # the references the turn used: role, library name (products), image sha256
                    "references": [
                        {"role": ref.get("role"), "name": ref.get("name"), "sha256": ref.get("key")}
                        for ref in turn.references or []
                    ],
                    "status": turn.status,
                    "approved": turn.approved,
                    "images": turn.image_keys,
                    "files": files,
                }
            )
        archive.writestr("manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False))
    return buf.getvalue()
