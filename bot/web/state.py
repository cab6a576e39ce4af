"""What every web handler reads: storage, the blob store, the link secret, redis, the queue.

One :class:`WebState` per server, kept in the aiohttp application under :data:`STATE`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from cachetools import TTLCache
from jinja2 import Environment, PackageLoader, select_autoescape

from bot.web.thumbnails import Thumbnails
from commands.config import is_admin
from commands.job_cancel import cancel_job
from engine.jobs.progress import LocalBus, ProgressBus
from engine.jobs.queue import JobQueue
from storage.blobs import BlobStore
from storage.repository import Store
from storage.studio_reads import StudioReads

STATE: web.AppKey[WebState] = web.AppKey("persona_studio_web", object)  # type: ignore[arg-type]


def templates() -> Environment:
    """The page templates, shipped as package data of bot.web (autoescaped)."""
    env = Environment(
        loader=PackageLoader("bot.web", "templates"),
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["short"] = lambda key: str(key)[:10]
    env.filters["score"] = lambda value: "–" if value is None else f"{float(value):.2f}"
    env.filters["when"] = lambda value: value.strftime("%Y-%m-%d %H:%M") if value else ""
    return env


@dataclass
class WebState:
    store: Store
    reads: StudioReads
    blobs: BlobStore
    thumbnails: Thumbnails
    #: signs and verifies studio links (storage.settings.web_secret)
    secret: str
    link_max_age_s: float
    admin_ids: tuple[str, ...] = ()
    #: redis.asyncio client when REDIS_URL is set (readiness, worker metrics, queue)
    redis: Any | None = None
    #: the queue that can cancel jobs (the conversation's, or an arq client); None: storage only
    queue: JobQueue | None = None
    env: Environment = field(default_factory=templates)
    #: workspace id -> the blob keys its members may see (refreshed when a key is missing, at most every 30 s)
    key_cache: TTLCache[int, set[str]] = field(default_factory=lambda: TTLCache(maxsize=1024, ttl=30))

    @property
    def bus(self) -> ProgressBus:
        return self.queue.bus if self.queue is not None else LocalBus()

    def is_admin(self, platform: str, platform_user_id: str) -> bool:
        return is_admin(self.admin_ids, platform, platform_user_id)

    def render(self, template: str, **values: Any) -> web.Response:
        html = self.env.get_template(template).render(**values)
        return web.Response(text=html, content_type="text/html", charset="utf-8")

    async def may_see(self, workspace_id: int, key: str) -> bool:
        """Whether this blob is one of the workspace's images (a key of another workspace is 404)."""
        keys = self.key_cache.get(workspace_id)
        if keys is None or key not in keys:  # new images since the last look: read them again
            keys = self.key_cache[workspace_id] = await self.reads.workspace_image_keys(workspace_id)
        return key in keys

    async def cancel_job(self, job_id: str) -> bool:
        """Cancel a job that has not finished: through the queue when it holds it, else in
        storage (held, or lost by redis). False when it had already finished or is unknown."""
        return await cancel_job(self.store, self.queue, self.bus, job_id, error="cancelled by an operator")
