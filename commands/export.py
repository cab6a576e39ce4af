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
    """``images/turn<id>-<n>.png`` for every approved turn (``videos/turn<id>.mp4`` and its poster
    for an approved clip), ``masks/turn<id>.png`` for every region turn (``turn<id>-<n>.png`` when it
    edited several images), and ``manifest.json`` with every turn's instruction, seed, parameters,
    references, region and identity scores (approved or not)."""
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
            video = (turn.params or {}).get("video") if turn.kind == "video" else None
            if turn.approved and video:  # a clip: its MP4 and poster, not the post's images again
                for name, key in ((f"videos/turn{turn.id}.mp4", video["key"]),
                                  (f"videos/turn{turn.id}-poster.png", video["poster_key"])):  # fmt: skip
                    archive.writestr(name, await asyncio.to_thread(blobs.get, key))
                    files.append(name)
            elif turn.approved:
                for index, key in enumerate(turn.image_keys):
                    name = f"images/turn{turn.id}-{index + 1}.png"
                    archive.writestr(name, await asyncio.to_thread(blobs.get, key))
                    files.append(name)
            region = await _region_entry(archive, blobs, turn.id, (turn.params or {}).get("region"))
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
                    "region": region,
                    "status": turn.status,
                    "approved": turn.approved,
                    "images": turn.image_keys,
                    # a clip: its MP4 (sha256), poster, length, frame rate, size, frame identity scores
                    "video": _video_entry(video) if video else None,
                    "files": files,
                }
            )
        archive.writestr("manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False))
    return buf.getvalue()


async def _region_entry(
    archive: zipfile.ZipFile, blobs: BlobStore, turn_id: int, region: dict[str, Any] | None
) -> dict[str, Any] | None:
    """A region turn's manifest entry (what it came from, the words, its mask files), its masks
    written into ``masks/``; ``None`` for a whole-frame turn."""
    if not isinstance(region, dict):
        return None
    keys = [key for key in region.get("mask_keys") or [] if isinstance(key, str)]
    masks = []
    for index, key in enumerate(keys):
        name = f"masks/turn{turn_id}.png" if len(keys) == 1 else f"masks/turn{turn_id}-{index + 1}.png"
        archive.writestr(name, await asyncio.to_thread(blobs.get, key))
        masks.append(name)
    return {"source": region.get("source"), "words": region.get("words"), "masks": masks, "mask_sha256": keys}


def _video_entry(video: dict[str, Any]) -> dict[str, Any]:
    return {
        "sha256": video.get("key"),
        "poster_sha256": video.get("poster_key"),
        "source_sha256": video.get("source_key"),
        "seconds": video.get("seconds"),
        "fps": video.get("fps"),
        "frames": video.get("frames"),
        "width": video.get("width"),
        "height": video.get("height"),
        "bytes": video.get("bytes"),
        "codec": "h264",
        "identity": video.get("identity"),
    }
