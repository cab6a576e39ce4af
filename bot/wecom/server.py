"""The WeCom (企业微信) callback server: one self-built app's callbacks, handled once, in order.

WeCom POSTs every message and event, encrypted, to ``/wecom/callback`` and gives up after 5 s
(then retries, 3 tries in all). So the handler only verifies, decrypts, parses and claims the
message (:mod:`bot.wecom.envelope`), refuses timestamps outside the replay window and other
AgentIDs, stores it in the inbox (:mod:`storage.inbox`; its unique key is the dedupe, so a repeat
is answered 200 and dropped, with or without redis), answers 200 with an empty body, and
hands it on in the background: translated into a commands Event (:mod:`bot.wecom.translate`),
answered with actions rendered as WeCom messages (:mod:`bot.wecom.render`). One user's messages
are handled in the order they arrived; a handled item is marked done, and a start handles
what a killed process left pending.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

import aiohttp
from aiohttp import web

from bot.frontend import ConversationClient, ConversationPort, FrontEndTasks
from bot.wecom.api import CLICKED_LABELS, WeComAPI, WeComAPIError
from bot.wecom.config import WeComConfig
from bot.wecom.crypto import DecryptError, InvalidSignatureError, ReceiverMismatchError, WeComCrypto
from bot.wecom.envelope import MAX_BODY_BYTES, BadCallback, check_agent, check_timestamp, dedupe_key, open_envelope
from bot.wecom.outbox import InboxKeeper, is_replying, payload_of, send_reply
from bot.wecom.rate_limit import RateLimiter
from bot.wecom.render import ActionRenderer
from bot.wecom.tokens import LayeredTokenStore, MemoryTokenStore, RedisTokenStore, TokenStore, token_key
from bot.wecom.translate import PLATFORM, to_event
from commands.events import Action, EventKind
from storage.inbox import Inbox

log = logging.getLogger(__name__)

CALLBACK_PATH = "/wecom/callback"
#: done inbox rows (dedupe keys) are kept at least this long, and never less than the replay window
MIN_KEY_RETENTION_S = 3600.0
PURGE_EVERY = 1000  # accepted callbacks between two purges of old done rows
#: callbacks handled at once: the rest wait their turn, so the accept path (verify, store, 200)
#: is never queued behind a crowd of handlers on the event loop and the database
HANDLING_CONCURRENCY = 2
TEXT_FAILED = "抱歉，处理这条消息时出错了，请稍后再试。\nSorry, something went wrong; please try again."


class WeComBot(ConversationClient):
    """The callback handlers of one self-built app, and its background processing of them.

    ``inbox`` holds every acknowledged callback (on the installation's database)."""

    platform = PLATFORM

    def __init__(
        self,
        config: WeComConfig,
        conversation: ConversationPort,
        *,
        inbox: Inbox,
        session: aiohttp.ClientSession | None = None,
        redis: Any = None,
        rate_limiter: RateLimiter | None = None,
        token_store: TokenStore | None = None,
        clock: Callable[[], float] = time.time,
        keep_every_s: float | None = None,
    ) -> None:
        self.config = config
        self.conversation = conversation
        self.corp_id = corp_id = config.corp_id
        self.agent_id = agent_id = config.agent_id
        self.crypto = WeComCrypto(config.token, config.aes_key, corp_id)
        self._session = session
        self._own_session = session is None
        self._redis = redis
        self._own_redis = False
        self._rate_limiter = rate_limiter
        self._token_store = token_store
        #: every acknowledged callback is stored here first; its unique key is the dedupe
        #: (its owner, bot.wecom.outbox.inbox_owner, names this front end; rows of one that
        #: stopped renewing its lease are taken over)
        self.inbox = inbox
        #: the inbox's platform column: one app's callbacks apart from another's on one database
        self.inbox_platform = f"{PLATFORM}:{corp_id}:{agent_id}"
        keeper_options = {} if keep_every_s is None else {"every_s": keep_every_s}
        self.keeper = InboxKeeper(self.inbox, self.inbox_platform, handle=self._take, **keeper_options)
        #: inbox rows being worked on here (never twice at once)
        self._in_hand: set[int] = set()
        self.clock = clock
        self.replay_window_s = config.replay_window_s
        self.key_retention = timedelta(seconds=max(MIN_KEY_RETENTION_S, 2 * self.replay_window_s))
        self._accepted = 0
        self._api: WeComAPI | None = None
        self.tasks = FrontEndTasks("wecom")
        self.renderer = ActionRenderer(lambda: self.api)
        self._user_locks: dict[str, asyncio.Lock] = {}
        self._user_refs: dict[str, int] = {}
        self._handling = asyncio.Semaphore(HANDLING_CONCURRENCY)
        self.processed = 0  # callbacks handed to the conversation (for health checks and tests)

    def __repr__(self) -> str:
        return f"WeComBot(corp_id={self.corp_id!r}, agent_id={self.agent_id!r})"

    @property
    def api(self) -> WeComAPI:
        if self._api is None:
            raise RuntimeError("WeComBot.start() has not run")
        return self._api

    # -- lifecycle

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        if self._redis is None and self.config.redis_url:
            import redis.asyncio as aioredis

            self._redis = aioredis.from_url(self.config.redis_url)
            self._own_redis = True
        token_store = self._token_store
        if token_store is None:
            key = token_key(self.corp_id, self.agent_id)
            shared = RedisTokenStore(self._redis, key) if self._redis is not None else None
            # memory in front of redis: a redis outage does not stop replies
            token_store = LayeredTokenStore(shared) if shared is not None else MemoryTokenStore()
        self._api = WeComAPI(
            corp_id=self.corp_id,
            secret=self.config.secret,
            agent_id=self.agent_id,
            session=self._session,
            base_url=self.config.api_base,
            token_store=token_store,
            rate_limiter=self._rate_limiter,
        )
        await self.tasks.open()
        self.register_deliverer()
        self.tasks.spawn(self.deliver_pending(), name="wecom-deliver-pending")
        await self.process_inbox()

    async def process_inbox(self) -> int:
        """Handle the callbacks a previous run acknowledged but did not finish (and send the
        replies it could not), in their order; rows of a front end whose lease lapsed too."""
        pending = await self.inbox.take_over(self.inbox_platform, own_too=True)
        for item in pending:
            self._take(item)
        if pending:
            log.info("wecom: handling %d acknowledged callback(s) left from before the start", len(pending))
        self.tasks.spawn(self._purge(), name="wecom-inbox-purge")
        self.keeper.start()
        return len(pending)

    def _take(self, item: Any) -> None:
        """Work on an inbox row: handle a pending one, send a replying one's outbox."""
        if item.id in self._in_hand or not self.tasks.is_open:
            return
        if is_replying(item):
            self._spawn(item.id, payload_of(item), outbox=list(item.reply or []))
        else:
            self._spawn(item.id, payload_of(item))

    async def _purge(self) -> None:
        try:
            await self.inbox.purge(self.inbox_platform, self.key_retention)
        except Exception:
            log.warning("wecom: purging old inbox rows failed", exc_info=True)

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Let callbacks in progress finish (up to ``timeout_s``), let the inbox rows not finished
        go (another front end takes them at once), then close what start opened."""
        await self.keeper.stop()
        await self.tasks.close(timeout_s)
        try:  # the rows cancelled just now are exactly those to hand on
            await self.inbox.release(self.inbox_platform)
        except Exception as exc:  # their lease lapses all the same
            log.warning("wecom: could not let the unfinished inbox rows go (%s); they wait for the lease", exc)
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None
        if self._own_redis and self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def drain(self) -> None:
        """Wait until every background task (callbacks, pending deliveries) has finished."""
        await self.tasks.drain()

    # -- HTTP handlers

    def _query(self, request: web.Request, *names: str) -> list[str]:
        values = [request.query.get(name, "") for name in names]
        if not all(values):
            raise BadCallback(400, f"missing query parameter(s): {', '.join(names)}")
        return values

    async def handle_verify(self, request: web.Request) -> web.Response:
        """GET: URL verification. Answer echostr's plaintext exactly."""
        try:
            msg_signature, timestamp, nonce, echostr = self._query(
                request, "msg_signature", "timestamp", "nonce", "echostr"
            )
            echostr = echostr.replace(" ", "+")  # an unencoded '+' in the query arrives as a space
            plain = self.crypto.verify_url(msg_signature, timestamp, nonce, echostr)
        except BadCallback as exc:
            return self._refuse(exc.status, exc.reason)
        except InvalidSignatureError:
            return self._refuse(403, "bad signature")
        except ReceiverMismatchError:
            return self._refuse(403, "wrong corp id")
        except DecryptError:
            return self._refuse(400, "undecryptable echostr")
        log.info("wecom: callback URL verified")
        return web.Response(body=plain.encode("utf-8"), content_type="text/plain", charset="utf-8")

    async def handle_callback(self, request: web.Request) -> web.Response:
        """POST: verify, decrypt, parse, claim, answer 200 at once; the work runs in the background."""
        try:
            if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
                return self._refuse(413, "body too large")
            msg_signature, timestamp, nonce = self._query(request, "msg_signature", "timestamp", "nonce")
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                return self._refuse(413, "body too large")
            message = open_envelope(self.crypto, self.corp_id, body, msg_signature, timestamp, nonce)
            check_timestamp(timestamp, self.clock(), self.replay_window_s)
            check_agent(message, self.agent_id)
        except BadCallback as exc:
            return self._refuse(exc.status, exc.reason)
        # stored before answering 200: what WeCom sees acknowledged is never lost, and a repeat
        # (a retry, a replay inside the window) finds its key already there
        try:
            item_id = await self.inbox.accept(self.inbox_platform, dedupe_key(message), message)
        except Exception:
            log.exception("wecom: could not store a callback; answering 500 so that WeCom retries")
            return web.Response(status=500, text="try again")
        if item_id is None:
            log.info("wecom: repeated delivery ignored")
            return web.Response(text="")
        self._spawn(item_id, message)
        self._accepted += 1
        if self._accepted % PURGE_EVERY == 0:
            self.tasks.spawn(self._purge(), name="wecom-inbox-purge")
        return web.Response(text="")

    def _spawn(self, item_id: int, message: dict[str, str], *, outbox: list[dict[str, Any]] | None = None) -> None:
        user = message["FromUserName"]
        self._user_refs[user] = self._user_refs.get(user, 0) + 1
        self._in_hand.add(item_id)
        self.tasks.spawn(self._process(item_id, message, outbox))

    def _refuse(self, status: int, reason: str) -> web.Response:
        log.warning("wecom: refused a callback (%d %s)", status, reason)
        return web.Response(status=status, text=reason)

    # -- background processing

    async def _process(self, item_id: int, message: dict[str, str], outbox: list[dict[str, Any]] | None) -> None:
        """Handle one inbox item (or send the rest of its reply) and mark it done once its reply
        went out; what could not be sent stays in its outbox. A stop (cancel) or crash before
        that leaves it pending: another front end on the database takes it (at once after a clean
        stop, see :meth:`stop`), or the next start handles it."""
        user = message["FromUserName"]
        lock = self._user_locks.setdefault(user, asyncio.Lock())
        try:
            async with lock, self._handling:
                if outbox is None:
                    try:
                        outbox = self.renderer.plan(await self._process_one(message), default_user=user)
                    except Exception:
                        log.exception("wecom: handling a %s message failed", message.get("MsgType"))
                        outbox = [{"to": user, "kind": "text", "text": TEXT_FAILED}]
                await send_reply(self.renderer, self.inbox, item_id, outbox)
        except Exception:
            log.exception("wecom: could not record inbox item %d; it is handled again on the next start", item_id)
        finally:
            self._in_hand.discard(item_id)
            self._user_refs[user] -= 1
            if self._user_refs[user] <= 0:
                del self._user_refs[user]
                self._user_locks.pop(user, None)

    async def _process_one(self, message: dict[str, str]) -> list[Action]:
        """The actions that answer one message (the card click's grey-out is sent here)."""
        user = message["FromUserName"]
        event = await to_event(self.api, message)
        if event is None:
            return []
        event = replace(event, workspace=self.corp_id)  # one company per installation: its workspace
        self.processed += 1
        actions = await self.conversation.handle(event)
        response_code = message.get("ResponseCode", "").strip()
        clicked = event.command if event.kind is EventKind.REACTION else event.options.get("role")
        if response_code and clicked in CLICKED_LABELS:
            try:  # grey out the clicked card; the click itself is already handled
                await self.api.update_card_clicked(user, response_code, CLICKED_LABELS[clicked])
            except WeComAPIError as exc:
                log.info("wecom: could not update the clicked card (%s)", exc.errcode)
        return actions

    async def deliver(self, actions: Sequence[Action]) -> None:
        """The conversation's deliverer for "wecom": raises if a result could not be sent."""
        await self.renderer.render(actions, raise_errors=True)
