"""The web server: routes, headers, and the front end that ``persona-studio run`` starts.

``persona-studio run`` starts it beside the chat front ends (same process, same conversation:
an admin's cancel goes through the same queue); ``persona-studio web`` starts it alone, with an
arq client for cancels when REDIS_URL is set.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from bot.frontend import ConversationPort, FrontEndBase
from bot.web import admin, auth, live, ops, pages, regions
from bot.web.config import WebConfig
from bot.web.state import STATE, WebState
from bot.web.thumbnails import Thumbnails
from commands.web_links import LINK_PATH
from engine.jobs.queue import JobQueue
from engine.render.regions.previews import MaskPreviews
from storage.blobs import BlobStore
from storage.repository import Store
from storage.studio_reads import StudioReads

log = logging.getLogger(__name__)
PLATFORM = "web"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


#: no script at all, images and forms from here only, never framed (the pages' one <style> is inline)
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


@web.middleware
async def headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Server-Timing (the benchmark reads it), no referrer (links carry tokens), no sniffing, a
    content security policy, no framing; pages with a user's data are never stored by caches."""
    started = time.perf_counter()
    response = await handler(request)
    response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.2f}"
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Frame-Options", "DENY")
    if response.content_type == "text/html":
        response.headers.setdefault("Cache-Control", "private, no-store")
        if isinstance(response, web.Response) and not response.prepared:
            response.enable_compression()  # gzip/deflate when the browser accepts it
    return response


def make_web_app(state: WebState) -> web.Application:
    app = web.Application(middlewares=[headers])
    app[STATE] = state
    app.router.add_get("/", _to_gallery)
    app.router.add_get("/healthz", ops.healthz)
    app.router.add_get("/readyz", ops.readyz)
    app.router.add_get("/metrics", ops.metrics_page)
    app.router.add_get(LINK_PATH + "{token}", auth.enter)
    app.router.add_get("/studio", _to_gallery)
    app.router.add_get("/studio/posts", pages.posts)
    app.router.add_get("/studio/posts/{post_id}", pages.post)
    app.router.add_get("/studio/posts/{post_id}/export.zip", pages.export)
    app.router.add_get("/studio/personas", pages.personas)
    app.router.add_get("/studio/img/{key}", pages.image)
    app.router.add_get("/studio/thumb/{key}.webp", pages.thumbnail)
    regions.add_routes(app)
    app.router.add_get("/studio/video/{key}.mp4", pages.video)
    app.router.add_get("/studio/jobs/{job_id}", live.page)
    app.router.add_get("/studio/jobs/{job_id}/events", live.events)
    app.router.add_get("/studio/jobs/{job_id}/state.json", live.state_json)
    app.router.add_get("/studio/jobs/{job_id}/preview.jpg", live.preview)
    app.router.add_get("/studio/admin", admin.admin)
    app.router.add_post("/studio/admin/jobs/{job_id}/cancel", admin.cancel)
    if state.redis is not None:
        app.on_cleanup.append(lambda _app: state.redis.aclose())
    return app


async def _to_gallery(_request: web.Request) -> web.Response:
    raise web.HTTPFound("/studio/posts")


def make_state(
    config: WebConfig,
    store: Store,
    blobs: BlobStore,
    queue: JobQueue | None,
    conversation: ConversationPort | None = None,
) -> WebState:
    """The server's state; with ``conversation`` (the chat front ends' own, ``persona-studio run``)
    the "Edit a region" page can send its edits into posts."""
    redis = None
    if config.redis_url:
        import redis.asyncio as aioredis

        redis = aioredis.Redis.from_url(config.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0)
    return WebState(
        store=store,
        reads=StudioReads(store.db),
        blobs=blobs,
        thumbnails=Thumbnails(blobs, config.thumbs_dir),
        secret=config.secret,
        link_max_age_s=config.link_max_age_s,
        admin_ids=config.admin_ids,
        redis=redis,
        queue=queue,
        previews=MaskPreviews(config.seg_model),
        region_edits=regions.edits_through(conversation, store) if conversation is not None else None,
    )


class WebFrontEnd(FrontEndBase):
    """The web server as one of the front ends :func:`bot.frontend.serve` runs (nothing is
    delivered to a browser: :meth:`deliver` is the base's no-op)."""

    platform = PLATFORM

    def __init__(self, config: WebConfig, state: WebState) -> None:
        super().__init__()
        self.config = config
        self.state = state
        self.runner: web.AppRunner | None = None

    async def open(self) -> None:
        self.runner = web.AppRunner(make_web_app(self.state), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.config.host, self.config.port)
        await site.start()
        log.info("web studio on http://%s:%s (links: %s)", self.config.host, self.config.port, self.config.public_url)

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
