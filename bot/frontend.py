"""The one interface every front end implements, the one port to the conversation, the shared
base of front ends, their background task group, and text splitting.

A front end (Discord, WeCom, the console) translates platform events into commands
:class:`~commands.events.Event` objects and renders the actions that come back. What the rest of
the program needs of it is small:

* ``start()`` connects or starts serving and registers ``deliver`` with the conversation; it
  returns once the front end is up (``SettingsError`` when its settings cannot work);
* ``stop()`` ends everything it started, its background tasks included;
* ``deliver(actions)`` renders job progress and results that arrive later (raises when a result
  could not be sent, so the commands layer delivers it again);
* ``deliver_pending()`` delivers results that finished while the front end was away;
* ``wait_closed()`` returns (or raises) when the front end stopped serving by itself;
* ``tasks``: its own :class:`FrontEndTasks`, an :class:`asyncio.TaskGroup` for background work.

:class:`ConversationPort` is everything a front end may ask of the conversation
(``commands.conversation.Conversation`` is the one implementation; tests use stand-ins).
:class:`FrontEndBase` holds the lifecycle front ends share (start/stop/wait_closed around their own
``open``/``close``); :class:`ConversationClient` what chat front ends share (registering the
deliverer, delivering what finished while they were away).

:func:`serve` starts any number of front ends the same way (``persona-studio run``). A new
platform is one package in ``bot/`` whose front end implements :class:`FrontEnd`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol

from commands.delivery import DeliverFn
from commands.events import Action, Event

log = logging.getLogger(__name__)

__all__ = [
    "ConversationClient",
    "ConversationPort",
    "DeliverFn",
    "FrontEnd",
    "FrontEndBase",
    "FrontEndTasks",
    "freeze_start_up_heap",
    "serve",
    "split_text",
    "utf8_size",
]


class ConversationPort(Protocol):
    """What front ends need of ``commands.conversation.Conversation``: the one port between them."""

    async def handle(self, event: Event) -> list[Action]: ...
    def add_deliverer(self, platform: str, deliver: DeliverFn) -> None: ...
    async def deliver_pending(self, platform: str) -> int: ...
    # post threads on platforms that have threads (Discord)
    async def bind_thread(self, thread_db_id: int, *, channel_id: int | None, thread_id: int | None) -> None: ...
    async def abandon_thread(self, thread_db_id: int) -> None: ...
    async def thread_owner(self, platform: str, thread_id: int) -> str | None: ...
    async def can_act(self, platform: str, user_id: str, thread_id: int) -> bool: ...
    # autocompletion
    async def archetypes(self) -> list[str]: ...
    # autocompletion: names of the workspace ("" = the platform's default) the user types in
    async def persona_names(self, platform: str, user_id: str, prefix: str = "", workspace: str = "") -> list[str]: ...
    async def product_names(self, platform: str, user_id: str, prefix: str = "", workspace: str = "") -> list[str]: ...


class FrontEndTasks:
    """A front end's background work on its own :class:`asyncio.TaskGroup`.

    The group lives in a task of its own (so a failing job never cancels the caller that opened
    it); every spawned coroutine's exception is logged, not propagated, so one failure cannot
    cancel its siblings. :meth:`drain` waits until nothing is running; :meth:`close` waits up to
    a timeout, then cancels what is left.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._group: asyncio.TaskGroup | None = None
        self._runner: asyncio.Task[None] | None = None
        self._entered = asyncio.Event()
        self._closing = asyncio.Event()
        self._running = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def is_open(self) -> bool:
        return self._group is not None and not self._closing.is_set()

    async def open(self) -> None:
        if self._runner is None:
            self._runner = asyncio.create_task(self._hold_group(), name=f"{self.name}-tasks")
        await self._entered.wait()

    async def _hold_group(self) -> None:
        async with asyncio.TaskGroup() as group:
            self._group = group
            self._entered.set()
            await self._closing.wait()

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str | None = None) -> asyncio.Task[None]:
        """Run ``coro`` in the background; its exception (if any) is logged."""
        if self._group is None or self._closing.is_set():
            coro.close()
            raise RuntimeError(f"{self.name}: background tasks are not open")
        self._running += 1
        self._idle.clear()
        return self._group.create_task(self._guard(coro), name=name)

    async def _guard(self, coro: Coroutine[Any, Any, Any]) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: a background task failed", self.name)
        finally:
            self._running -= 1
            if self._running == 0:
                self._idle.set()

    async def drain(self) -> None:
        """Wait until no background task is running (tasks spawned meanwhile included)."""
        while self._running:
            await self._idle.wait()

    async def close(self, timeout_s: float = 10.0) -> None:
        """Let running tasks finish for up to ``timeout_s`` seconds, then cancel the rest."""
        self._closing.set()
        if self._runner is None:
            return
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(self._runner, timeout_s)


class FrontEnd(Protocol):
    """What ``persona-studio run`` (and the tests) need of a front end; see the module doc."""

    platform: str
    tasks: FrontEndTasks

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def deliver(self, actions: Sequence[Action]) -> None: ...
    async def deliver_pending(self) -> int: ...
    async def wait_closed(self) -> None: ...


class FrontEndBase:
    """The lifecycle every front end shares: :meth:`start` runs :meth:`open`, :meth:`stop` runs
    :meth:`close` and then wakes :meth:`wait_closed`. A front end that never delivers (the web
    studio) keeps the no-op :meth:`deliver` and :meth:`deliver_pending`."""

    platform: str

    def __init__(self, tasks: FrontEndTasks | None = None) -> None:
        self.tasks = tasks if tasks is not None else FrontEndTasks(self.platform)
        self._stopped = asyncio.Event()

    async def open(self) -> None:
        """Connect or start serving (subclasses)."""

    async def close(self) -> None:
        """End what :meth:`open` started (subclasses)."""

    async def start(self) -> None:
        await self.open()

    async def stop(self) -> None:
        try:
            await self.close()
        finally:
            self._stopped.set()

    async def wait_closed(self) -> None:
        await self._stopped.wait()

    async def deliver(self, actions: Sequence[Action]) -> None:
        return None

    async def deliver_pending(self) -> int:
        return 0


class ConversationClient:
    """What chat front ends share: a conversation, deliveries registered under ``platform``, and
    the results that finished while the front end was away delivered on start.

    Mixed into the object that renders (the Discord client, the WeCom callback handler, the
    console); it sets ``conversation``, ``platform`` and ``deliver``.
    """

    conversation: ConversationPort
    platform: str

    async def deliver(self, actions: Sequence[Action]) -> None:
        raise NotImplementedError

    def register_deliverer(self) -> None:
        """From now on the conversation delivers this platform's job progress and results here."""
        self.conversation.add_deliverer(self.platform, self.deliver)

    async def deliver_pending(self) -> int:
        """Deliver the results that finished while the front end was away (failures are logged)."""
        try:
            count = await self.conversation.deliver_pending(self.platform)
        except Exception:
            log.exception("%s: delivering pending results failed", self.platform)
            return 0
        if count:
            log.info("%s: delivered %d result(s) finished while the front end was away", self.platform, count)
        return count


async def serve(*front_ends: FrontEnd) -> None:
    """Start every front end, run until cancelled or until one stops by itself, then stop them all.

    A front end that stopped with an error re-raises it here (``SettingsError`` included).
    """
    started: list[FrontEnd] = []
    try:
        for front_end in front_ends:
            await front_end.start()
            started.append(front_end)
        freeze_start_up_heap()
        waiters = [asyncio.create_task(f.wait_closed(), name=f"{f.platform}-closed") for f in started]
        try:
            done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        for waiter in done:
            waiter.result()  # re-raise a front end's failure
    finally:
        for front_end in reversed(started):
            try:
                await front_end.stop()
            except Exception:
                log.exception("stopping the %s front end failed", front_end.platform)


def freeze_start_up_heap() -> None:
    """Once the front ends are up: collect, then move every object left (modules, classes, the
    app: ~150,000 in a WeCom front end) into the collector's permanent generation. A full
    collection then scans only what came after; otherwise its first one in a burst of callbacks
    held the event loop 85-250 ms on the 2-core machine, every answer in flight waiting."""
    gc.collect()
    gc.freeze()


# -- text splitting ---------------------------------------------------------------------------


def split_text(text: str, limit: int, size: Callable[[str], int] = len) -> list[str]:
    """Split ``text`` into pieces of at most ``limit`` (as measured by ``size``), never inside a
    character; joining the pieces gives back ``text``.

    A piece ends after its last newline when that keeps it at least half full. Discord counts
    characters (``size=len``, 2000); WeCom counts UTF-8 bytes (``size=utf8_size``, 2048).
    """
    pieces: list[str] = []
    rest = text
    while size(rest) > limit:
        low, high = 1, len(rest)  # the longest prefix that fits: size is monotonic in the length
        while low < high:
            middle = (low + high + 1) // 2
            if size(rest[:middle]) <= limit:
                low = middle
            else:
                high = middle - 1
        end = low  # at least one character, even if that alone is over the limit
        newline = rest.rfind("\n", 0, end)
        if newline >= 0 and size(rest[:newline]) >= limit // 2:
            end = newline + 1
        pieces.append(rest[:end])
        rest = rest[end:]
    if rest or not pieces:
        pieces.append(rest)
    return pieces


def utf8_size(text: str) -> int:
    return len(text.encode("utf-8"))
