"""Wiring: settings -> database, blob store, queue, conversation. Shared by every front end."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from commands.conversation import Conversation, ConversationConfig
from engine.job_runner import EngineLike, JobRunner, engine_runner_factory
from engine.progress import ProgressBus
from engine.queue import make_queue
from storage.blobs import BlobStore, open_blob_store
from storage.db import Database
from storage.repository import Store
from storage.settings import Settings

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
    await db.upgrade()
    store = Store(db)
    blobs = open_blob_store(settings)
    if engine is not None:
        factory: Callable[[ProgressBus], JobRunner] = lambda bus: JobRunner(engine, store, bus)  # noqa: E731
    else:
        factory = engine_runner_factory(settings, store, blobs)
    queue = make_queue(settings.redis_url, store, factory)
    config = ConversationConfig(
        engine_model=settings.engine_model,
        lora_dir=settings.lora_dir,
        admin_ids=tuple(settings.admin_ids),
        max_running_jobs=settings.max_running_jobs,
        max_waiting_jobs=settings.max_waiting_jobs,
    )
    conversation = Conversation(store, blobs, queue, config)
    await conversation.start()
    log.info("queue: %s", "arq via redis" if settings.redis_url else "embedded (in-process)")
    return App(settings=settings, db=db, store=store, blobs=blobs, conversation=conversation)
