"""Replies that go out, or stay in the outbox until they do; leases of the inbox rows.

A handled inbox row is done only once its whole reply went out (:func:`send_reply`). Messages a
send could not deliver (WeCom unreachable, an API error, no access token) stay on the row
(``InboxItem.reply``) and :class:`InboxKeeper` sends them again with a growing backoff, in order,
under the user's lock. The keeper also renews this front end's lease on its rows and takes over
the rows of a front end whose lease lapsed or that let them go on a clean stop (several front
ends on one database).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable

from bot.wecom.api import WeComAPIError
from bot.wecom.render import ActionRenderer, Message
from storage.inbox import Inbox
from storage.models import InboxItem, InboxState

log = logging.getLogger(__name__)

KEEP_EVERY_S = 3.0  # lease renewal, take-over and due retries this often

SEND_ERRORS = (WeComAPIError, OSError, asyncio.TimeoutError)


def is_send_error(exc: BaseException) -> bool:
    """A failure to reach WeCom or to get a token (redis and aiohttp errors included)."""
    from aiohttp import ClientError
    from redis.exceptions import RedisError

    return isinstance(exc, (*SEND_ERRORS, ClientError, RedisError))


async def send_reply(renderer: ActionRenderer, inbox: Inbox, item_id: int, messages: list[Message]) -> bool:
    """Send ``messages`` in order; mark the row done when all went out (optional ones may be
    dropped), else keep the rest in its outbox. True when the row is done."""
    for index, message in enumerate(messages):
        try:
            await renderer.send(message)
        except Exception as exc:
            if message.get("optional") and is_send_error(exc):
                log.info("wecom: optional message not sent (%s)", exc)
                continue
            if not is_send_error(exc):
                log.exception("wecom: sending a %s message failed; kept to try again", message.get("kind"))
            rest = [m for m in messages[index:] if not m.get("optional")]
            retry_at = await inbox.unsent(item_id, rest)
            log.warning(
                "wecom: %d message(s) of a reply not sent (%s); trying again at %s",
                len(rest),
                type(exc).__name__,
                retry_at.isoformat(timespec="seconds"),
            )
            return False
    await inbox.done(item_id)
    return True


class InboxKeeper:
    """The front end's background upkeep of its inbox rows (one task, cancelled on stop)."""

    def __init__(
        self,
        inbox: Inbox,
        platform: str,
        *,
        handle: Callable[[InboxItem], None],
        every_s: float = KEEP_EVERY_S,
    ) -> None:
        self.inbox = inbox
        self.platform = platform
        #: takes a row to work on (a pending one is handled, a replying one's outbox sent)
        self.handle = handle
        self.every_s = every_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="wecom-inbox-keeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)  # a timer: the upkeep runs periodically
            try:
                await self.once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("wecom: inbox upkeep failed (%s); trying again", exc)

    async def once(self) -> int:
        """Renew, take over lapsed rows, hand due retries on; how many rows were handed on."""
        await self.inbox.renew(self.platform)
        taken = await self.inbox.take_over(self.platform)
        if taken:
            log.info("wecom: took over %d inbox row(s) whose front end stopped renewing", len(taken))
        due = await self.inbox.due(self.platform)
        rows = {item.id: item for item in [*taken, *due]}
        for item_id in sorted(rows):
            self.handle(rows[item_id])
        return len(rows)


def inbox_owner(port: int) -> str:
    """How a front end names itself in its inbox rows: host and port, the same after a restart
    (it takes its own rows back at once) and apart from a second front end."""
    return f"{socket.gethostname()}:{port}"


def payload_of(item: InboxItem) -> dict[str, str]:
    return {str(k): str(v) for k, v in item.payload.items()}


def is_replying(item: InboxItem) -> bool:
    return item.state == InboxState.REPLYING
