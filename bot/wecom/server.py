"""The WeCom (企业微信) front end: a self-built app's callback server and its reply renderer.

WeCom POSTs every message and event, encrypted, to ``/wecom/callback`` and gives up after 5 s
(then retries, 3 tries in all). So the handler only verifies, decrypts, parses and claims the
message (MsgId, or FromUserName + CreateTime for events; redis SET NX when REDIS_URL is set),
answers 200 with an empty body, and translates it into a commands :class:`Event` in the
background. One user's messages are handled in the order they arrived.

WeCom has no threads: events carry ``thread_id=None`` and the commands layer keeps each user's
current post session. Replies go out through the API (:mod:`bot.wecom_api`): text, images,
files, and a template_card with 通过 / 重来 / 撤销 under each result, whose clicks come back as
template_card_event and become REACTION events. Progress is sent once per state (queued,
started, done/failed/cancelled), never per step, to stay within 30 messages a minute per user.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import xml.etree.ElementTree as ET
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from bot.wecom_api import (
    CARD_BUTTONS,
    CLICKED_LABELS,
    MemoryTokenStore,
    RateLimiter,
    RedisTokenStore,
    TokenStore,
    WeComAPI,
    WeComAPIError,
    token_key,
)
from bot.wecom_crypto import DecryptError, InvalidSignatureError, ReceiverMismatchError, WeComCrypto
from commands.events import (
    Action,
    Attachment,
    Button,
    Event,
    EventKind,
    FileOut,
    Images,
    OpenThread,
    Progress,
    Reply,
)
from commands.parser import parse_text
from storage.settings import Settings, SettingsError

log = logging.getLogger(__name__)

PLATFORM = "wecom"
CALLBACK_PATH = "/wecom/callback"
MAX_BODY_BYTES = 256 * 1024  # real callbacks are a few KiB; anything bigger is refused (413)
DEDUPE_TTL_S = 3600.0  # WeCom's retries come within seconds; keep keys well beyond that
PROGRESS_STATES = ("queued", "running", "done", "failed", "cancelled")
TEXT_FAILED = "抱歉，处理这条消息时出错了，请稍后再试。\nSorry, something went wrong; please try again."
TEXT_IMAGE_FAILED = "图片下载失败，请重新发送。\nCould not fetch the image; please send it again."
TEXT_UNSUPPORTED = "目前只支持文字和图片消息。\nOnly text and image messages are supported."
REACTION_COMMANDS = frozenset(button.value for button in Button)

DeliverFn = Callable[[Sequence[Action]], Awaitable[None]]


class ConversationLike(Protocol):
    """What the adapter needs of ``commands.conversation.Conversation``."""

    async def handle(self, event: Event) -> list[Action]: ...
    def add_deliverer(self, platform: str, deliver: DeliverFn) -> None: ...
    async def deliver_pending(self, platform: str) -> int: ...


class BadCallback(Exception):
    """A callback to refuse: ``status`` is the 4xx to answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


# ---------------------------------------------------------------- dedupe


class Dedupe(Protocol):
    async def claim(self, key: str) -> bool:
        """True the first time ``key`` is seen within the TTL, False for a repeat."""
        ...


class MemoryDedupe:
    """Keys seen in the last ``ttl_s`` seconds, at most ``max_keys`` of them (oldest dropped)."""

    def __init__(
        self, ttl_s: float = DEDUPE_TTL_S, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s = ttl_s
        self.max_keys = max_keys
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    async def claim(self, key: str) -> bool:
        now = self._clock()
        while self._seen:
            oldest_key, expires = next(iter(self._seen.items()))
            if expires > now and len(self._seen) < self.max_keys:
                break
            del self._seen[oldest_key]
        if key in self._seen:
            return False
        self._seen[key] = now + self.ttl_s
        return True


class RedisDedupe:
    """``SET key 1 NX EX ttl``: one claim across every process sharing the redis."""

    def __init__(self, redis: Any, prefix: str, ttl_s: float = DEDUPE_TTL_S) -> None:
        self._redis = redis
        self.prefix = prefix
        self.ttl_s = ttl_s

    async def claim(self, key: str) -> bool:
        return bool(await self._redis.set(f"{self.prefix}{key}", b"1", nx=True, ex=int(self.ttl_s)))


# ---------------------------------------------------------------- XML


def parse_xml(text: str | bytes) -> dict[str, str]:
    """The direct children of a WeCom ``<xml>`` document as tag -> text.

    Documents with a DTD are refused (no entity expansion); so is anything but one ``<xml>`` root.
    """
    raw = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    lowered = raw.lower()
    if "<!doctype" in lowered or "<!entity" in lowered:
        raise BadCallback(400, "XML with a DTD")
    try:
        root = ET.fromstring(raw)
    except ET.ParseError:
        raise BadCallback(400, "malformed XML") from None
    if root.tag != "xml":
        raise BadCallback(400, "XML root is not <xml>")
    fields: dict[str, str] = {}
    for child in root:
        if len(child) == 0 and child.tag not in fields:
            fields[child.tag] = child.text or ""
    return fields


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value.strip()) if value is not None else None
    except ValueError:
        return None


def plain_text(text: str) -> str:
    """WeCom text messages show markdown literally: drop the ``**bold**`` markers."""
    return text.replace("**", "")


def reaction_from_key(event_key: str) -> tuple[str, int | None] | None:
    """``approve:12`` -> ("approve", 12); None for keys that are not ours."""
    name, _, turn = event_key.strip().partition(":")
    if name not in REACTION_COMMANDS:
        return None
    return name, _int_or_none(turn) if turn else None


# ---------------------------------------------------------------- the adapter


def _required(settings: Settings) -> tuple[str, int, str, str, str]:
    missing = [
        name
        for name, value in (
            ("WECOM_CORP_ID", settings.wecom_corp_id),
            ("WECOM_AGENT_ID", settings.wecom_agent_id),
            ("WECOM_SECRET", settings.wecom_secret),
            ("WECOM_TOKEN", settings.wecom_token),
            ("WECOM_AES_KEY", settings.wecom_aes_key),
        )
        if value is None or value == ""
    ]
    if missing:
        names = ", ".join(missing)
        raise SettingsError(f"setting {missing[0]}: the WeCom front end needs it (missing: {names})")
    assert settings.wecom_corp_id and settings.wecom_agent_id is not None
    assert settings.wecom_secret and settings.wecom_token and settings.wecom_aes_key
    return (
        settings.wecom_corp_id,
        settings.wecom_agent_id,
        settings.wecom_secret.get_secret_value(),
        settings.wecom_token.get_secret_value(),
        settings.wecom_aes_key.get_secret_value(),
    )


class WeComBot:
    """Callback handlers, event translation and action rendering for one self-built app."""

    def __init__(
        self,
        settings: Settings,
        conversation: ConversationLike,
        *,
        session: aiohttp.ClientSession | None = None,
        redis: Any = None,
        rate_limiter: RateLimiter | None = None,
        token_store: TokenStore | None = None,
        dedupe: Dedupe | None = None,
        dedupe_ttl_s: float = DEDUPE_TTL_S,
    ) -> None:
        corp_id, agent_id, secret, token, aes_key = _required(settings)
        self.settings = settings
        self.conversation = conversation
        self.corp_id = corp_id
        self.agent_id = agent_id
        self.crypto = WeComCrypto(token, aes_key, corp_id)
        self._secret = secret
        self._session = session
        self._own_session = session is None
        self._redis = redis
        self._own_redis = False
        self._rate_limiter = rate_limiter
        self._token_store = token_store
        self._dedupe = dedupe
        self._dedupe_ttl_s = dedupe_ttl_s
        self._api: WeComAPI | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._user_locks: dict[str, asyncio.Lock] = {}
        self._user_refs: dict[str, int] = {}
        self._progress_sent: OrderedDict[str, set[str]] = OrderedDict()
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
        if self._redis is None and self.settings.redis_url:
            import redis.asyncio as aioredis

            self._redis = aioredis.from_url(self.settings.redis_url)
            self._own_redis = True
        token_store = self._token_store
        if token_store is None:
            key = token_key(self.corp_id, self.agent_id)
            token_store = RedisTokenStore(self._redis, key) if self._redis is not None else MemoryTokenStore()
        if self._dedupe is None:
            prefix = f"persona-studio:wecom:seen:{self.corp_id}:{self.agent_id}:"
            self._dedupe = (
                RedisDedupe(self._redis, prefix, self._dedupe_ttl_s)
                if self._redis is not None
                else MemoryDedupe(self._dedupe_ttl_s)
            )
        self._api = WeComAPI(
            corp_id=self.corp_id,
            secret=self._secret,
            agent_id=self.agent_id,
            session=self._session,
            base_url=self.settings.wecom_api_base,
            token_store=token_store,
            rate_limiter=self._rate_limiter,
        )
        self.conversation.add_deliverer(PLATFORM, self.deliver)
        self._spawn(self._deliver_pending())

    async def close(self, timeout_s: float = 10.0) -> None:
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None
        if self._own_redis and self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def drain(self) -> None:
        """Wait until every background task (callbacks, pending deliveries) has finished."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver_pending(self) -> None:
        try:
            count = await self.conversation.deliver_pending(PLATFORM)
            if count:
                log.info("wecom: delivered %d pending result(s) from before the start", count)
        except Exception:
            log.exception("wecom: delivering pending results failed")

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
            message = self.open_envelope(body, msg_signature, timestamp, nonce)
        except BadCallback as exc:
            return self._refuse(exc.status, exc.reason)
        key = self.dedupe_key(message)
        assert self._dedupe is not None
        if not await self._dedupe.claim(key):
            log.info("wecom: repeated delivery ignored")
            return web.Response(text="")
        user = message["FromUserName"]
        self._user_refs[user] = self._user_refs.get(user, 0) + 1
        self._spawn(self._process(message))
        return web.Response(text="")

    def _refuse(self, status: int, reason: str) -> web.Response:
        log.warning("wecom: refused a callback (%d %s)", status, reason)
        return web.Response(status=status, text=reason)

    def open_envelope(self, body: bytes, msg_signature: str, timestamp: str, nonce: str) -> dict[str, str]:
        """The decrypted message fields of a POSTed callback, or :class:`BadCallback`."""
        if len(body) > MAX_BODY_BYTES:
            raise BadCallback(413, "body too large")
        outer = parse_xml(body)
        encrypted = outer.get("Encrypt", "").strip()
        if not encrypted:
            raise BadCallback(400, "no Encrypt element")
        to_user = outer.get("ToUserName", "").strip()
        if to_user and to_user != self.corp_id:
            raise BadCallback(403, "wrong corp id")
        try:
            plain = self.crypto.decrypt_message(msg_signature, timestamp, nonce, encrypted)
        except InvalidSignatureError:
            raise BadCallback(403, "bad signature") from None
        except ReceiverMismatchError:
            raise BadCallback(403, "wrong corp id") from None
        except DecryptError:
            raise BadCallback(400, "undecryptable message") from None
        message = parse_xml(plain)
        inner_to = message.get("ToUserName", "").strip()
        if inner_to and inner_to != self.corp_id:
            raise BadCallback(403, "wrong corp id")
        if not message.get("FromUserName", "").strip() or not message.get("MsgType", "").strip():
            raise BadCallback(400, "message without FromUserName or MsgType")
        message["FromUserName"] = message["FromUserName"].strip()
        message["MsgType"] = message["MsgType"].strip()
        return message

    @staticmethod
    def dedupe_key(message: dict[str, str]) -> str:
        """MsgId for messages; FromUserName + CreateTime for events (WeCom's documented keys)."""
        msg_id = message.get("MsgId", "").strip()
        if msg_id:
            return f"msg:{msg_id}"
        create_time = message.get("CreateTime", "").strip()
        if create_time:
            return f"evt:{message['FromUserName']}:{create_time}"
        digest = hashlib.sha1(repr(sorted(message.items())).encode("utf-8")).hexdigest()
        return f"raw:{digest}"

    # -- background processing

    async def _process(self, message: dict[str, str]) -> None:
        user = message["FromUserName"]
        lock = self._user_locks.setdefault(user, asyncio.Lock())
        try:
            async with lock:
                await self._process_one(message)
        except Exception:
            log.exception("wecom: handling a %s message failed", message.get("MsgType"))
            try:
                await self.api.send_text(user, TEXT_FAILED)
            except Exception:
                log.warning("wecom: could not tell the user about the failure")
        finally:
            self._user_refs[user] -= 1
            if self._user_refs[user] <= 0:
                del self._user_refs[user]
                self._user_locks.pop(user, None)

    async def _process_one(self, message: dict[str, str]) -> None:
        user = message["FromUserName"]
        event = await self.to_event(message)
        if event is None:
            return
        self.processed += 1
        actions = await self.conversation.handle(event)
        await self.render(actions, default_user=user)
        response_code = message.get("ResponseCode", "").strip()
        if event.kind is EventKind.REACTION and response_code and event.command in CLICKED_LABELS:
            try:  # grey out the clicked card; the click itself is already handled
                await self.api.update_card_clicked(user, response_code, CLICKED_LABELS[event.command])
            except WeComAPIError as exc:
                log.info("wecom: could not update the clicked card (%s)", exc.errcode)

    async def to_event(self, message: dict[str, str]) -> Event | None:
        """Translate one decrypted message into a commands Event (None: nothing to hand over)."""
        user = message["FromUserName"]
        msg_type = message["MsgType"]
        agent = _int_or_none(message.get("AgentID"))
        if msg_type == "text":
            content = message.get("Content", "")
            parsed = parse_text(content)
            if parsed.kind is EventKind.MESSAGE:
                if not parsed.args:
                    return None
                return Event(
                    platform=PLATFORM, user_id=user, kind=EventKind.MESSAGE, text=parsed.args, channel_id=agent
                )
            return Event(
                platform=PLATFORM,
                user_id=user,
                kind=parsed.kind,
                command=parsed.command,
                args=parsed.args,
                channel_id=agent,
            )
        if msg_type == "image":
            attachment = await self._download_image(message)
            if attachment is None:
                await self.api.send_text(user, TEXT_IMAGE_FAILED)
                return None
            return Event(
                platform=PLATFORM,
                user_id=user,
                kind=EventKind.MESSAGE,
                text="",
                attachments=(attachment,),
                channel_id=agent,
            )
        if msg_type == "event":
            if message.get("Event", "").strip() != "template_card_event":
                log.debug("wecom: ignored event %s", message.get("Event"))
                return None
            reaction = reaction_from_key(message.get("EventKey", ""))
            if reaction is None:
                log.info("wecom: ignored a card click with an unknown key")
                return None
            command, turn_id = reaction
            return Event(
                platform=PLATFORM,
                user_id=user,
                kind=EventKind.REACTION,
                command=command,
                turn_id=turn_id,
                channel_id=agent,
            )
        await self.api.send_text(user, TEXT_UNSUPPORTED)
        return None

    async def _download_image(self, message: dict[str, str]) -> Attachment | None:
        media_id = message.get("MediaId", "").strip()
        pic_url = message.get("PicUrl", "").strip()
        media = None
        if media_id:
            try:
                media = await self.api.download_media(media_id)
            except WeComAPIError as exc:
                log.warning("wecom: media/get failed (%s); trying PicUrl", exc.errcode)
        if media is None and pic_url:
            try:
                media = await self.api.download_url(pic_url)
            except WeComAPIError as exc:
                log.warning("wecom: fetching PicUrl failed (%s)", exc.errmsg)
        if media is None or not media.data:
            return None
        return Attachment(filename=media.filename, data=media.data, content_type=media.content_type)

    # -- rendering

    async def deliver(self, actions: Sequence[Action]) -> None:
        """The conversation's deliverer for "wecom": raises if a result could not be sent."""
        await self.render(actions, raise_errors=True)

    async def render(
        self, actions: Sequence[Action], *, default_user: str | None = None, raise_errors: bool = False
    ) -> None:
        for action in actions:
            user = action.where.user_id or default_user
            if not user:
                log.warning("wecom: an action without a user was dropped")
                continue
            try:
                await self._render_one(user, action)
            except (WeComAPIError, OSError) as exc:
                if isinstance(action, Progress):
                    log.info("wecom: progress message not sent (%s)", exc)
                    continue
                if raise_errors:
                    raise
                log.warning("wecom: sending a %s failed (%s)", type(action).__name__, exc)

    async def _render_one(self, user: str, action: Action) -> None:
        api = self.api
        if isinstance(action, Images):
            await self._render_images(user, action)
        elif isinstance(action, Reply):
            await api.send_text(user, plain_text(action.text))
        elif isinstance(action, OpenThread):
            await api.send_text(user, plain_text(action.text or action.title))
        elif isinstance(action, Progress):
            text = self._progress_text(action)
            if text:
                await api.send_text(user, text, optional=True)
        elif isinstance(action, FileOut):
            if action.text:
                await api.send_text(user, plain_text(action.text))
            media_id = await api.upload_media(action.data, action.filename or "export.zip", "file")
            await api.send_file(user, media_id)
        else:
            log.warning("wecom: no renderer for %s", type(action).__name__)

    async def _render_images(self, user: str, action: Images) -> None:
        api = self.api
        buttons = [b.value if isinstance(b, Button) else str(b) for b in action.buttons]
        card_buttons = [name for name in buttons if name in CARD_BUTTONS]
        lines = [plain_text(action.text).strip()] + [plain_text(i.caption).strip() for i in action.images]
        summary = "\n".join(line for line in lines if line)
        short = len(summary) <= 44 and "\n" not in summary
        if summary and (not card_buttons or not short):
            await api.send_text(user, summary)
        for image in action.images:
            data = await asyncio.to_thread(Path(image.path).read_bytes)
            media_id = await api.upload_image(data, image.filename or Path(image.path).name)
            await api.send_image(user, media_id)
        if card_buttons:
            desc = summary if short and summary else "点击按钮：通过 / 重来 / 撤销"
            await api.send_card(
                user, turn_id=action.turn_id, title=f"结果 #{action.turn_id} · Result", desc=desc, buttons=card_buttons
            )

    def _progress_text(self, action: Progress) -> str | None:
        """Text for the first Progress of each state of a job; None for repeats (per-step running)."""
        state = action.state
        if state not in PROGRESS_STATES:
            return None
        job = action.job_id or f"{action.where.user_id}:{action.where.thread_db_id}"
        sent = self._progress_sent.get(job)
        if sent is None:
            sent = self._progress_sent[job] = set()
            while len(self._progress_sent) > 1000:
                self._progress_sent.popitem(last=False)
        if state in sent:
            return None
        sent.add(state)
        if action.text:
            return action.text
        if state == "queued":
            ahead = f"，前面还有 {action.position} 个" if action.position else ""
            return f"⏳ 已排队{ahead}。Queued."
        if state == "running":
            eta = f"，预计 {round(action.eta_s)} 秒" if action.eta_s else ""
            return f"🎨 开始生成{eta}。Started."
        if state == "done":
            return "✅ 生成完成。Done."
        if state == "failed":
            return "⚠️ 生成失败。Failed."
        return "❌ 已取消。Cancelled."


WECOM_BOT: web.AppKey[WeComBot] = web.AppKey("wecom_bot", WeComBot)


def create_wecom_app(settings: Settings, conversation: ConversationLike, **options: Any) -> web.Application:
    """The callback server's aiohttp app. ``options`` go to :class:`WeComBot` (tests inject
    a session, redis client, rate limiter ...). The bot is ``app[WECOM_BOT]``."""
    bot = WeComBot(settings, conversation, **options)
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[WECOM_BOT] = bot
    app.router.add_get(CALLBACK_PATH, bot.handle_verify)
    app.router.add_post(CALLBACK_PATH, bot.handle_callback)

    async def lifecycle(_app: web.Application) -> Any:
        await bot.start()
        yield
        await bot.close()

    app.cleanup_ctx.append(lifecycle)
    return app


async def run_wecom(settings: Settings, conversation: ConversationLike) -> None:
    """Serve the callback on WECOM_HOST:WECOM_PORT until cancelled."""
    app = create_wecom_app(settings, conversation)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.wecom_host, settings.wecom_port)
        await site.start()
        log.info("wecom: callback server on http://%s:%d%s", settings.wecom_host, settings.wecom_port, CALLBACK_PATH)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
