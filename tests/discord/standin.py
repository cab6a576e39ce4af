"""A STAND-IN for ``commands.conversation.Conversation``, for the adapter's translation tests.

It is not the real conversation: it records the events the Discord adapter hands over and answers
with scripted actions, so these tests check only the adapter's translation (payload -> Event,
Actions -> Discord REST calls). End-to-end tests plug the real Conversation into the same
``start_bot`` fixture instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from commands.delivery import DeliverFn
from commands.events import Action, Event

Script = Callable[[Event], "list[Action] | Awaitable[list[Action]]"]


class StandInConversation:
    """Records events; ``script(event)`` returns the actions (default: none)."""

    def __init__(
        self, script: Script | None = None, *, archetypes: Sequence[str] = ("sweet", "elegant", "boss", "puppy")
    ) -> None:
        self.script = script
        self.events: list[Event] = []
        self.binds: list[tuple[int, int | None, int | None]] = []
        self.deliverers: dict[str, DeliverFn] = {}
        self.owners: dict[int, str] = {}  # thread id -> owner's platform user id
        self.personas: dict[str, list[str]] = {}
        self.products: dict[str, list[str]] = {}
        self.archetype_list = list(archetypes)
        self.pending_deliveries = 0
        self.deliver_pending_calls = 0
        self.abandoned: list[int] = []
        self.gate: asyncio.Event | None = None  # when set up, handle() waits for it (a busy backend)
        self._changed = asyncio.Condition()

    async def handle(self, event: Event) -> list[Action]:
        self.events.append(event)
        async with self._changed:
            self._changed.notify_all()
        if self.gate is not None:
            await self.gate.wait()
        if self.script is None:
            return []
        result: Any = self.script(event)
        if asyncio.iscoroutine(result):
            result = await result
        return list(result)

    async def bind_thread(self, thread_db_id: int, *, channel_id: int | None, thread_id: int | None) -> None:
        self.binds.append((thread_db_id, channel_id, thread_id))
        async with self._changed:
            self._changed.notify_all()

    def add_deliverer(self, platform: str, deliver: DeliverFn) -> None:
        self.deliverers[platform] = deliver

    async def deliver_pending(self, platform: str) -> int:
        self.deliver_pending_calls += 1
        return self.pending_deliveries

    async def archetypes(self) -> list[str]:
        return list(self.archetype_list)

    async def persona_names(self, platform: str, user_id: str, prefix: str = "", workspace: str = "") -> list[str]:
        return [n for n in self.personas.get(user_id, []) if n.lower().startswith(prefix.lower())]

    async def product_names(self, platform: str, user_id: str, prefix: str = "", workspace: str = "") -> list[str]:
        return [n for n in self.products.get(user_id, []) if n.lower().startswith(prefix.lower())]

    async def thread_owner(self, platform: str, thread_id: int) -> str | None:
        return self.owners.get(thread_id)

    async def can_act(self, platform: str, user_id: str, thread_id: int) -> bool:
        return self.owners.get(thread_id) == user_id

    async def abandon_thread(self, thread_db_id: int) -> None:
        self.abandoned.append(thread_db_id)

    async def wait_events(self, count: int, timeout_s: float = 10.0) -> list[Event]:
        """Wait until at least ``count`` events were handed over."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(self.events) >= count), timeout_s)
        return self.events

    async def wait_binds(self, count: int, timeout_s: float = 10.0) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(self.binds) >= count), timeout_s)
