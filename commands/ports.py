"""What handlers use of the conversation, as narrow protocols (``Conversation`` satisfies them all).

A handler names the smallest one it needs, so ``commands/handlers`` never imports the conversation
(which imports the table, which imports the handlers): ``Configured`` (settings only), ``Stored``
(storage and settings), ``Imaging`` (blobs too), ``Cancelling`` (the queue and ending jobs),
``Rendering`` (starting jobs), ``Creating`` (personas: the archetypes) and ``Informing`` (help,
status, export).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from commands.config import ConversationConfig
    from commands.context import Ctx
    from commands.events import ImageOut, Progress, Where
    from engine.jobs.queue import JobQueue
    from engine.specs import JobSpec, PersonaSpec, RenderParams
    from storage.blobs import BlobStore
    from storage.models import Persona, Thread, User
    from storage.repository import Store


class Configured(Protocol):
    config: ConversationConfig


class Stored(Configured, Protocol):
    store: Store


class Imaging(Stored, Protocol):
    blobs: BlobStore

    async def image(self, key: str, filename: str, caption: str = "") -> ImageOut: ...


class Cancelling(Stored, Protocol):
    queue: JobQueue


class Rendering(Imaging, Cancelling, Protocol):
    async def submit(
        self,
        ctx: Ctx,
        spec: JobSpec,
        *,
        thread: Thread | None,
        where: Where,
        turn: dict | None = None,
        hold: bool = False,
    ) -> Progress: ...

    async def release_if_ready(self, thread_db_id: int) -> None: ...
    def persona_spec(self, persona: Persona) -> PersonaSpec: ...
    def params(self, user: User, thread: Thread | None) -> RenderParams: ...
    def seed(self, user: User, thread: Thread | None) -> int: ...


class Creating(Rendering, Protocol):
    async def archetypes(self) -> list[str]: ...


class Informing(Stored, Protocol):
    queue: JobQueue

    def params(self, user: User, thread: Thread | None) -> RenderParams: ...
    async def export_zip(self, thread: Thread) -> bytes: ...
    def help_text(self) -> str: ...
