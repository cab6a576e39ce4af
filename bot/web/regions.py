"""The studio's "Edit a region" page: click points on a post's current image, see SAM's mask after
each click (computed in this process by engine.render.regions.previews, the image embedding
cached), then send an instruction: the edit goes into the post through the conversation, like a
chat edit with a mask attached, so its result also appears in the post's chat thread.

Routes (the viewer's own posts only; POSTs carry the session's CSRF token):
``GET /studio/posts/{id}/region?image=N``, ``POST .../region/preview`` (JSON points -> PNG overlay,
``X-Mask-Coverage``), ``POST .../region/edit`` (JSON points + instruction -> text).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from bot.frontend import ConversationPort
from bot.web.auth import Viewer, viewer_of
from bot.web.pages import _int, _own_thread
from bot.web.state import STATE, WebState
from commands.events import Attachment, Event, EventKind, Reply
from commands.regions import MASK_ROLE
from engine.render.regions.masks import RegionError
from storage.models import Thread, User
from storage.repository import Store

MAX_POINTS = 64
#: the page runs its own small script, fetches masks from this server and shows them as blob: images
REGION_PAGE_POLICY = (
    "default-src 'none'; img-src 'self' blob:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


async def _current_images(state: WebState, thread: Thread) -> list[str]:
    if thread.current_turn_id is None:
        return []
    return list((await state.store.get_turn(thread.current_turn_id)).image_keys)


async def page(request: web.Request) -> web.Response:
    state = request.app[STATE]
    viewer = await viewer_of(request)
    thread = await _own_thread(request, viewer.workspace_id)
    images = await _current_images(state, thread)
    if not images:
        raise web.HTTPNotFound(text="This post has no image to edit yet.")
    index = (_int(request.query.get("image")) or 1) - 1
    if not 0 <= index < len(images):
        raise web.HTTPNotFound(text=f"This post has {len(images)} image(s).")
    response = state.render(
        "region.html", viewer=viewer, thread=thread, images=images, index=index, key=images[index],
        csrf=viewer.csrf(state.secret),
    )  # fmt: skip
    response.headers["Content-Security-Policy"] = REGION_PAGE_POLICY
    return response


async def _request(request: web.Request) -> tuple[WebState, Viewer, Thread, str, int, dict[str, Any]]:
    """The checked body of a region POST: the state, viewer, post, image key and index, the JSON."""
    state = request.app[STATE]
    viewer = await viewer_of(request)
    thread = await _own_thread(request, viewer.workspace_id)
    try:
        body = json.loads(await request.text())
    except ValueError:
        raise web.HTTPBadRequest(text="expected JSON") from None
    if not isinstance(body, dict) or body.get("csrf") != viewer.csrf(state.secret):
        raise web.HTTPForbidden(text="This page has expired; reload it.")
    images = await _current_images(state, thread)
    index = body.get("image")
    if not isinstance(index, int) or not 0 <= index < len(images):
        raise web.HTTPConflict(text="The post changed meanwhile; reload the page.")
    return state, viewer, thread, images[index], index, body


def _points(body: dict[str, Any]) -> list[tuple[float, float, bool]]:
    raw = body.get("points")
    if not isinstance(raw, list) or not raw or len(raw) > MAX_POINTS:
        raise web.HTTPBadRequest(text=f"send 1 to {MAX_POINTS} clicks")
    points = []
    for point in raw:
        if not (isinstance(point, list) and len(point) == 3 and all(isinstance(v, int | float) for v in point[:2])):
            raise web.HTTPBadRequest(text="a click is [x, y, positive]")
        points.append((float(point[0]), float(point[1]), bool(point[2])))
    return points


async def _mask(state: WebState, key: str, points: list[tuple[float, float, bool]]) -> Any:
    if state.previews is None:
        raise web.HTTPServiceUnavailable(text="Region previews are not available on this server.")
    image = await asyncio.to_thread(lambda: state.blobs.open_image(key).convert("RGB"))
    try:
        return await state.previews.preview(image, key, points)
    except RegionError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None


async def preview(request: web.Request) -> web.Response:
    state, _viewer, _thread, key, _index, body = await _request(request)
    found = await _mask(state, key, _points(body))
    png = await asyncio.to_thread(found.overlay_png)
    headers = {"X-Mask-Coverage": f"{found.coverage:.4f}", "Cache-Control": "private, no-store"}
    return web.Response(body=png, content_type="image/png", headers=headers)


async def edit(request: web.Request) -> web.Response:
    state, viewer, thread, key, index, body = await _request(request)
    instruction = body.get("instruction")
    if not isinstance(instruction, str) or not instruction.strip():
        raise web.HTTPBadRequest(text="say what to do inside the mask")
    if state.region_edits is None:
        raise web.HTTPServiceUnavailable(text="Edits from the studio are not available on this server.")
    found = await _mask(state, key, _points(body))
    ok, text = await state.region_edits(viewer.user, thread, index, found.png(), instruction.strip())
    return web.Response(text=text, status=200 if ok else 400)


def edits_through(
    conversation: ConversationPort, store: Store
) -> Callable[[User, Thread, int, bytes, str], Awaitable[tuple[bool, str]]]:
    """The page's edits as chat events of the viewer in the post's workspace and platform: ``#N mask:
    <instruction>`` with the mask attached (role ``mask``), aimed at the post's current turn, so the
    conversation treats it like a chat edit (checks, limits, the new turn) and the result is
    delivered into the post's chat thread."""

    async def send(user: User, thread: Thread, index: int, mask_png: bytes, instruction: str) -> tuple[bool, str]:
        workspace = await store.get_workspace(thread.workspace_id)
        event = Event(
            platform=thread.platform,
            user_id=user.platform_user_id,
            user_name=user.display_name,
            kind=EventKind.MESSAGE,
            text=f"#{index + 1} mask: {instruction}",
            attachments=(Attachment(filename="mask.png", data=mask_png, content_type="image/png", role=MASK_ROLE),),
            channel_id=thread.channel_id,
            thread_id=thread.thread_id,
            turn_id=thread.current_turn_id,
            workspace=workspace.external_id,
        )
        actions = await conversation.handle(event)
        said = [action.text for action in actions if isinstance(action, Reply)]
        refused = any(text.startswith("⚠️") for text in said)
        return not refused, "\n".join(said) or "sent"

    return send


def add_routes(app: web.Application) -> None:
    app.router.add_get("/studio/posts/{post_id}/region", page)
    app.router.add_post("/studio/posts/{post_id}/region/preview", preview)
    app.router.add_post("/studio/posts/{post_id}/region/edit", edit)
