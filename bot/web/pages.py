"""The studio pages of one workspace: its posts (grid with filters: author, persona, state; the
Review list of posts in review), personas, one post's turn tree and activity log, its export, and
the images they show (WebP thumbnails and full images, with caching headers).

Every handler starts from the viewer's signed link and reads only the rows of the workspace it
names: another workspace's post, persona or image answers 404, the same as one that does not exist.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bot.web.auth import viewer_of
from bot.web.state import STATE
from commands.export import build_export
from commands.ids import parse_id
from engine.specs import ReferenceRole
from storage.blobs import BlobNotFound
from storage.models import JobStatus, Thread, ThreadStatus, Turn, TurnKind

#: content-addressed: an image or thumbnail URL never changes what it serves
IMMUTABLE = "private, max-age=31536000, immutable"
STATUSES = tuple(str(status) for status in ThreadStatus)


async def posts(request: web.Request) -> web.Response:
    state = request.app[STATE]
    viewer = await viewer_of(request)
    workspace_id = viewer.workspace_id
    personas = await state.store.list_personas_in(workspace_id)
    members = await state.store.members(workspace_id)
    persona_id = _int(request.query.get("persona"))
    author_id = _int(request.query.get("author"))
    status = request.query.get("status") or None
    if status is not None and status not in STATUSES:
        raise web.HTTPBadRequest(text=f"status must be one of: {', '.join(STATUSES)}")
    cards = await state.reads.post_cards(author_id, workspace_id=workspace_id, persona_id=persona_id, status=status)
    review = await state.reads.post_cards(workspace_id=workspace_id, status=ThreadStatus.IN_REVIEW)
    return state.render(
        "posts.html",
        viewer=viewer,
        cards=cards,
        review=review,
        personas=personas,
        members=members,
        persona_id=persona_id,
        author_id=author_id,
        status=status,
        statuses=STATUSES,
    )


async def personas(request: web.Request) -> web.Response:
    state = request.app[STATE]
    viewer = await viewer_of(request)
    found = await state.store.list_personas_in(viewer.workspace_id)
    counts = await state.reads.workspace_post_counts(viewer.workspace_id)
    return state.render("personas.html", viewer=viewer, personas=found, counts=counts)


@dataclass
class TurnNode:
    turn: Turn
    references: list[dict[str, str]]
    current: bool
    children: list[TurnNode] = field(default_factory=list)
    #: a region turn's masks by image index (shown over those images)
    masks: dict[int, str] = field(default_factory=dict)


async def post(request: web.Request) -> web.Response:
    state = request.app[STATE]
    viewer = await viewer_of(request)
    thread = await _own_thread(request, viewer.workspace_id)
    persona = await state.store.get_persona(thread.persona_id)
    activity = await state.store.activity(thread.id)
    author = await state.store.get_user(thread.owner_id)
    turns = await state.store.turns(thread.id)
    jobs = await state.store.thread_jobs(thread.id, unfinished_only=False)
    specs = {job.id: job.spec for job in jobs}
    live = [job for job in jobs if not JobStatus(job.status).finished]  # each has a live page (bot.web.live)
    nodes = {}
    for turn in turns:
        references = _references(turn, specs.get(turn.job_id or ""), thread)
        nodes[turn.id] = TurnNode(turn, references, current=turn.id == thread.current_turn_id)
        nodes[turn.id].masks = _masks(turn, specs.get(turn.job_id or ""))
    roots: list[TurnNode] = []
    for node in nodes.values():
        parent = nodes.get(node.turn.parent_id) if node.turn.parent_id is not None else None
        (parent.children if parent is not None else roots).append(node)
    approved = any(turn.approved for turn in turns)
    return state.render(
        "post.html",
        viewer=viewer,
        thread=thread,
        persona=persona,
        roots=roots,
        approved=approved,
        live=live,
        activity=activity,
        author=author.display_name or author.platform_user_id,
    )


async def export(request: web.Request) -> web.Response:
    state = request.app[STATE]
    viewer = await viewer_of(request)
    thread = await _own_thread(request, viewer.workspace_id)
    data = await build_export(state.store, state.blobs, thread)
    return web.Response(
        body=data,
        content_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="post-{thread.id}.zip"',
            "Cache-Control": "private, no-store",
        },
    )


async def thumbnail(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    key = await _own_key(request)
    if _not_modified(request, key):
        return web.Response(status=304, headers=_image_headers(key))
    try:
        path = await state.thumbnails.get(key)
    except (BlobNotFound, FileNotFoundError):
        raise web.HTTPNotFound() from None
    data = await asyncio.to_thread(path.read_bytes)  # a few KB: one read, and our own ETag
    return web.Response(body=data, headers={**_image_headers(key), "Content-Type": "image/webp"})


async def image(request: web.Request) -> web.StreamResponse:
    """A full image, streamed from the blob store (Range requests work on local files)."""
    state = request.app[STATE]
    key = await _own_key(request)
    if _not_modified(request, key):
        return web.Response(status=304, headers=_image_headers(key))
    try:
        info = await asyncio.to_thread(state.blobs.info, key)
        path = await asyncio.to_thread(state.blobs.path, key)
        headers = {**_image_headers(key), "Content-Type": info.mime}
        if await asyncio.to_thread(path.is_file):  # sendfile, Range; its own ETag (mtime, size)
            return web.FileResponse(path, headers={k: v for k, v in headers.items() if k != "ETag"})
        data = await asyncio.to_thread(state.blobs.get, key)  # a store without local files
    except (BlobNotFound, FileNotFoundError):
        raise web.HTTPNotFound() from None
    return web.Response(body=data, headers=headers)


async def video(request: web.Request) -> web.StreamResponse:
    """A clip's MP4, for the post page's <video> (Range requests work on local files)."""
    state = request.app[STATE]
    key = await _own_key(request)
    headers = {"Cache-Control": IMMUTABLE, "Content-Type": "video/mp4"}
    try:
        path = await asyncio.to_thread(state.blobs.path, key)
        if await asyncio.to_thread(path.is_file):
            return web.FileResponse(path, headers=headers)
        data = await asyncio.to_thread(state.blobs.get, key)
    except (BlobNotFound, FileNotFoundError):
        raise web.HTTPNotFound() from None
    return web.Response(body=data, headers=headers)


# -- helpers --------------------------------------------------------------------------------------


async def _own_thread(request: web.Request, workspace_id: int) -> Thread:
    thread_id = _int(request.match_info["post_id"])
    if thread_id is None:
        raise web.HTTPNotFound()
    thread = await request.app[STATE].store.thread_in(workspace_id, thread_id)
    if thread is None:
        raise web.HTTPNotFound()  # another workspace's: the same answer as a post that does not exist
    return thread


async def _own_key(request: web.Request) -> str:
    viewer = await viewer_of(request)
    key = request.match_info["key"]
    if len(key) != 64 or not await request.app[STATE].may_see(viewer.workspace_id, key):
        raise web.HTTPNotFound()
    return key


def _image_headers(key: str) -> dict[str, str]:
    return {"Cache-Control": IMMUTABLE, "ETag": f'"{key}"'}


def _not_modified(request: web.Request, key: str) -> bool:
    return request.headers.get("If-None-Match", "").strip() in (f'"{key}"', f'W/"{key}"')


def _int(value: Any) -> int | None:
    """A storage id from a URL, bounded as in chat (commands.ids): anything else names nothing."""
    return parse_id(value) if isinstance(value, str) else None


def _references(turn: Turn, spec: dict[str, Any] | None, thread: Thread) -> list[dict[str, str]]:
    """The images a turn's job was given, with their roles: references (scene, product, face)
    when the spec lists them, else a generation's scene image."""
    spec = spec or {}
    found = [
        {"role": str(ref.get("role") or "reference"), "key": str(ref["key"])}
        for ref in spec.get("references") or []
        if isinstance(ref, dict) and isinstance(ref.get("key"), str)
    ]
    scene = ReferenceRole.SCENE.value
    if not found and turn.kind == TurnKind.GENERATE:
        found = [{"role": scene, "key": key} for key in spec.get("context_keys") or [] if isinstance(key, str)]
    if not found and turn.parent_id is None and thread.scene_key:
        found = [{"role": scene, "key": thread.scene_key}]
    return found


def _masks(turn: Turn, spec: dict[str, Any] | None) -> dict[int, str]:
    """A region turn's mask per image it changed: the worker's masks in ``targets`` order, or the
    attached mask (every target) until the worker has made them."""
    region = (turn.params or {}).get("region")
    if not isinstance(region, dict):
        return {}
    targets = [t for t in (spec or {}).get("targets") or [0] if isinstance(t, int)]
    made = [key for key in region.get("mask_keys") or [] if isinstance(key, str)]
    if len(made) == len(targets):
        return dict(zip(targets, made, strict=True))
    attached = region.get("mask_key")
    return {target: attached for target in targets} if isinstance(attached, str) else {}
