"""Wiring: settings -> database, blob store, queue, conversation. Shared by every front end."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from commands.conversation import Conversation, ConversationConfig
from engine.jobs.dispatch import EngineLike
from engine.jobs.progress import ProgressBus
from engine.jobs.queue import make_queue
from engine.jobs.runner import JobRunner, engine_runner_factory, import_engine_modules
from storage.blobs import BlobStore, open_blob_store
from storage.db import Database
from storage.repository import Store
from storage.settings import Settings, web_secret
from storage.workspace_keys import configured_homes

log = logging.getLogger(__name__)


@dataclass
class App:
    settings: Settings
    db: Database
    store: Store
    blobs: BlobStore
    conversation: Conversation

    async def close(self) -> None:
        await self.conversation.close()
        await self.db.dispose()


async def build_app(settings: Settings, engine: EngineLike | None = None) -> App:
    """Apply migrations, then assemble the conversation on the configured queue and start it.

    With REDIS_URL unset the queue is embedded: jobs run in this process and the engine loads
    on the first job. ``engine`` supplies an already-built engine instead (tests share one
    loaded tiny engine; benchmarks use a no-op one).
    """
    db = Database(settings.database_url)
    await db.upgrade(home_workspaces=configured_homes(settings.wecom_corp_id, settings.discord_guild_ids))
    store = Store(db)
    blobs = open_blob_store(settings)
    log.info("blob store: %s", await asyncio.to_thread(blobs.check))  # BlobStoreUnavailable: no start
    if engine is not None:
        factory: Callable[[ProgressBus], JobRunner] = lambda bus: JobRunner(engine, store, bus)  # noqa: E731
    else:
        factory = engine_runner_factory(settings, store, blobs)
        if not settings.redis_url:  # embedded: heavy imports now, before any front end connects
            await asyncio.to_thread(import_engine_modules, settings.face_backend)
    queue = make_queue(settings.redis_url, store, factory)
    config = ConversationConfig(
        engine_model=settings.engine_model,
        video_model=settings.engine_video_model,
        lora_dir=settings.lora_dir,
        admin_ids=tuple(settings.admin_ids),
        max_running_jobs=settings.max_running_jobs,
        max_waiting_jobs=settings.max_waiting_jobs,
        max_train_work=settings.max_train_work,
        allow_photo_personas=settings.allow_photo_personas,
        web_public_url=settings.effective_web_public_url,
        web_secret=web_secret(settings),
        web_link_hours=settings.web_link_hours,
    )
    conversation = Conversation(store, blobs, queue, config)
    await conversation.start()
    log.info("queue: %s", "arq via redis" if settings.redis_url else "embedded (in-process)")
    return App(settings=settings, db=db, store=store, blobs=blobs, conversation=conversation)
