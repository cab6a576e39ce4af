"""A fake Discord (REST API v10 + gateway websocket) on loopback, for driving the real discord.py client.

It speaks Discord's documented wire formats, not a simplification of them:

* REST under ``/api/v10``: JSON bodies, and ``multipart/form-data`` with ``payload_json`` plus
  ``files[n]`` parts; errors as ``{"message", "code"}`` with Discord's JSON error codes
  (10062 Unknown interaction, 40060 already acknowledged, 50027 Invalid Webhook Token,
  40005 Request entity too large, 50035 Invalid Form Body, 160004 thread already created ...).
* The gateway: HELLO (op 10) with ``heartbeat_interval``; IDENTIFY (op 2) answered by the READY
  dispatch (``session_id``, ``resume_gateway_url``, ``application``) and one GUILD_CREATE per
  guild (channels, active threads, members, roles); HEARTBEAT (op 1) answered by op 11; RESUME
  (op 6) answered by RESUMED; REQUEST_GUILD_MEMBERS (op 8) answered by GUILD_MEMBERS_CHUNK.
  ``compress=zlib-stream`` in the URL gets a zlib stream flushed with Z_SYNC_FLUSH, like Discord.
  Privileged intents the application lacks close the socket with 4014, a bad token with 4004.
  MESSAGE_CREATE to a session without the Message Content intent carries empty content,
  attachments, embeds and components unless the bot is mentioned (or wrote it).
* Interactions: a callback later than 3 s after the interaction was dispatched fails with 10062,
  like Discord; a second callback with 40060; webhook calls with an expired token with 50027.
  After a deferred response (type 5), the first followup edits the deferred "thinking" message.
* Channel state is kept: messages (with snowflake ids), threads (a thread started from a message
  has the message's id), reactions; the bot's own REST actions come back over the gateway
  (MESSAGE_CREATE, MESSAGE_UPDATE, MESSAGE_DELETE, THREAD_CREATE, MESSAGE_REACTION_ADD/REMOVE),
  as they do from Discord.

Tests point discord.py at it with :meth:`FakeDiscord.patch_discord_py` (``Route.BASE`` and the
gateway URL), build interactions with :meth:`slash_command` / :meth:`component_click` /
:meth:`autocomplete`, play users with :meth:`user_message` / :meth:`user_react`, and wait for what
the bot did with :meth:`wait_request` (an ``asyncio.Condition``; nothing polls or sleeps).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import secrets
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from aiohttp import WSMsgType, web

API_PREFIX = "/api/v10"
DISCORD_EPOCH_MS = 1420070400000

# Gateway intents (https://discord.com/developers/docs/events/gateway#gateway-intents)
INTENT_GUILDS = 1 << 0
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_PRESENCES = 1 << 8
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_GUILD_MESSAGE_REACTIONS = 1 << 10
INTENT_MESSAGE_CONTENT = 1 << 15
PRIVILEGED_INTENTS = INTENT_GUILD_MEMBERS | INTENT_GUILD_PRESENCES | INTENT_MESSAGE_CONTENT

# Application flags
APP_FLAG_GATEWAY_PRESENCE_LIMITED = 1 << 13
APP_FLAG_GATEWAY_GUILD_MEMBERS_LIMITED = 1 << 15
APP_FLAG_GATEWAY_MESSAGE_CONTENT_LIMITED = 1 << 19

# Channel types
CHANNEL_GUILD_TEXT = 0
CHANNEL_DM = 1
CHANNEL_PUBLIC_THREAD = 11
CHANNEL_PRIVATE_THREAD = 12
THREAD_TYPES = (10, CHANNEL_PUBLIC_THREAD, CHANNEL_PRIVATE_THREAD)

# Interaction types and callback types
INTERACTION_PING = 1
INTERACTION_APPLICATION_COMMAND = 2
INTERACTION_MESSAGE_COMPONENT = 3
INTERACTION_AUTOCOMPLETE = 4
INTERACTION_MODAL_SUBMIT = 5
CALLBACK_CHANNEL_MESSAGE = 4
CALLBACK_DEFERRED_CHANNEL_MESSAGE = 5
CALLBACK_DEFERRED_UPDATE_MESSAGE = 6
CALLBACK_UPDATE_MESSAGE = 7
CALLBACK_AUTOCOMPLETE_RESULT = 8
CALLBACK_MODAL = 9
_ALLOWED_CALLBACKS = {
    INTERACTION_APPLICATION_COMMAND: {4, 5, 9},
    INTERACTION_MESSAGE_COMPONENT: {4, 5, 6, 7, 9},
    INTERACTION_AUTOCOMPLETE: {8},
    INTERACTION_MODAL_SUBMIT: {4, 5, 6, 7},
}

MESSAGE_FLAG_EPHEMERAL = 1 << 6
MESSAGE_FLAG_LOADING = 1 << 7

# Application command option types
OPT_SUB_COMMAND = 1
OPT_SUB_COMMAND_GROUP = 2
OPT_STRING = 3
OPT_INTEGER = 4
OPT_BOOLEAN = 5
OPT_USER = 6
OPT_CHANNEL = 7
OPT_ROLE = 8
OPT_MENTIONABLE = 9
OPT_NUMBER = 10
OPT_ATTACHMENT = 11

ALL_PERMISSIONS = (1 << 50) - 1
MANAGE_GUILD = 1 << 5  # "Manage Server"
ADMINISTRATOR = 1 << 3  # implies every permission
_COMMAND_NAME = re.compile(r"^[-_\w]{1,32}$")
_MENTION = re.compile(r"<@!?(\d+)>")
_AUTO_ARCHIVE = {60, 1440, 4320, 10080}


class FakeDiscordError(AssertionError):
    """A test used the fake wrongly (unknown command, message or user)."""


class _HTTPError(Exception):
    def __init__(self, status: int, code: int, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"message": message, "code": code}
        if errors is not None:
            self.body["errors"] = errors


def _form_error(field_name: str, code: str, message: str) -> _HTTPError:
    return _HTTPError(
        400,
        50035,
        "Invalid Form Body",
        {field_name: {"_errors": [{"code": code, "message": message}]}},
    )


@dataclass
class UploadedFile:
    """One ``files[n]`` part of a multipart request."""

    field_name: str
    filename: str
    content_type: str | None
    data: bytes


@dataclass
class RecordedRequest:
    """One REST request the client made, with what the fake answered."""

    index: int
    method: str
    path: str  # after /api/v10, percent-decoded per segment
    route: str  # a name such as "create_message", "interaction_callback", "unknown"
    params: dict[str, str]
    json: Any
    files: list[UploadedFile]
    status: int
    response: Any
    at: float  # loop.time() when the request arrived
    vars: dict[str, str] = field(default_factory=dict)  # the route's path variables


@dataclass
class FakeInteraction:
    id: int
    token: str
    type: int
    payload: dict[str, Any]
    created_at: float
    channel_id: int
    callback_type: int | None = None
    callback_at: float | None = None
    callback_data: dict[str, Any] | None = None
    late_callback: bool = False
    original_message_id: int | None = None
    expired: bool = False

    @property
    def ack_delay(self) -> float | None:
        """Seconds between the dispatch and the (first accepted) callback."""
        return None if self.callback_at is None else self.callback_at - self.created_at


@dataclass
class _Session:
    ws: web.WebSocketResponse
    compressor: Any | None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    intents: int = 0
    session_id: str = ""
    seq: int = 0
    identified: bool = False


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


class FakeDiscord:
    """A loopback Discord for one application with one guild (more guilds via :meth:`add_guild`)."""

    ack_deadline_s = 3.0
    token_lifetime_s = 15 * 60

    def __init__(
        self,
        token: str = "fake-bot-token",
        *,
        message_content_allowed: bool = True,
        attachment_size_limit: int = 10 * 1024 * 1024,
        heartbeat_interval_ms: int = 41250,
    ) -> None:
        self.token = token
        self.message_content_allowed = message_content_allowed
        self.attachment_size_limit = attachment_size_limit
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.cdn_available = True
        #: route names answered 403 / 50013 Missing Permissions (a permission the bot lacks)
        self.forbidden_routes: set[str] = set()
        self._last_snowflake = 0
        self._app: web.Application | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.requests: list[RecordedRequest] = []
        self._changed: asyncio.Condition | None = None
        self.sessions: list[_Session] = []
        self.identified = asyncio.Event()
        self.gateway_closes: list[int] = []  # close codes the fake sent
        self.users: dict[int, dict[str, Any]] = {}
        self.guilds: dict[int, dict[str, Any]] = {}
        self.members: dict[int, dict[int, dict[str, Any]]] = {}  # guild -> user -> member
        self.channels: dict[int, dict[str, Any]] = {}
        self.messages: dict[int, dict[str, Any]] = {}
        self.reactions: dict[int, dict[str, list[int]]] = {}  # message -> emoji -> user ids
        self.commands: dict[int | None, list[dict[str, Any]]] = {}  # guild id (None = global)
        self.interactions: dict[int, FakeInteraction] = {}
        self._by_token: dict[str, FakeInteraction] = {}
        self.cdn: dict[str, tuple[bytes, str]] = {}  # path -> (data, content type)

        self.application_id = self.snowflake()
        self.bot_user = self.add_user("persona-bot", bot=True, user_id=self.application_id)
        self.guild_id = self.add_guild("Persona Test Guild")
        self.channel_id = self.add_text_channel(self.guild_id, "general")
        self.owner = self.add_user("olivia")
        self.stranger = self.add_user("sam")
        for user in (self.bot_user, self.owner, self.stranger):
            self.add_member(self.guild_id, user)

    # -- ids and state builders ---------------------------------------------------------------
    def snowflake(self) -> int:
        now_ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        value = (now_ms << 22) | (1 << 17)
        value = max(value, self._last_snowflake + 1)
        self._last_snowflake = value
        return value

    def add_user(self, name: str, *, bot: bool = False, user_id: int | None = None) -> dict[str, Any]:
        uid = user_id or self.snowflake()
        user = {
            "id": str(uid),
            "username": name,
            "global_name": name.title(),
            "discriminator": "0",
            "avatar": None,
            "public_flags": 0,
            "flags": 0,
        }
        if bot:
            user["bot"] = True
        self.users[uid] = user
        return user

    def add_guild(self, name: str) -> int:
        """A guild whose @everyone may do anything but manage it: Manage Server (and Administrator)
        belong to its "Manager" role (:meth:`add_member` with ``manager=True``)."""
        gid = self.snowflake()
        self.guilds[gid] = {
            "id": str(gid),
            "name": name,
            "icon": None,
            "owner_id": str(self.application_id),
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "features": [],
            "emojis": [],
            "stickers": [],
            "roles": [
                {
                    "id": str(gid),
                    "name": "@everyone",
                    "color": 0,
                    "hoist": False,
                    "position": 0,
                    "permissions": str(ALL_PERMISSIONS),
                    "managed": False,
                    "mentionable": False,
                    "flags": 0,
                }
            ],
            "system_channel_id": None,
            "rules_channel_id": None,
            "vanity_url_code": None,
            "description": None,
            "banner": None,
            "splash": None,
            "discovery_splash": None,
            "max_members": 500000,
            "public_updates_channel_id": None,
            "application_id": None,
        }
        self.members[gid] = {}
        roles = self.guilds[gid]["roles"]
        roles[0]["permissions"] = str(ALL_PERMISSIONS & ~(MANAGE_GUILD | ADMINISTRATOR))
        manager = {**roles[0], "id": str(self.snowflake()), "name": "Manager", "position": 1}
        roles.append({**manager, "permissions": str(ALL_PERMISSIONS)})
        return gid

    def _role_permissions(self, guild_id: int, role_ids: list[str]) -> int:
        """A member's permissions: @everyone's and those of their roles."""
        roles = {r["id"]: int(r["permissions"]) for r in self.guilds[guild_id]["roles"]}
        value = roles[str(guild_id)]
        for role_id in role_ids:
            value |= roles.get(role_id, 0)
        return value

    def add_text_channel(self, guild_id: int, name: str) -> int:
        cid = self.snowflake()
        self.channels[cid] = {
            "id": str(cid),
            "type": CHANNEL_GUILD_TEXT,
            "guild_id": str(guild_id),
            "name": name,
            "position": len(self.channels),
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "flags": 0,
        }
        return cid

    def add_member(self, guild_id: int, user: dict[str, Any], *, manager: bool = False) -> dict[str, Any]:
        roles = [r["id"] for r in self.guilds[guild_id]["roles"] if manager and r["name"] == "Manager"]
        member = {
            "user": user,
            "nick": None,
            "avatar": None,
            "roles": roles,
            "joined_at": _now_iso(),
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "communication_disabled_until": None,
        }
        self.members[guild_id][int(user["id"])] = member
        return member

    def add_cdn_file(self, filename: str, data: bytes, content_type: str | None = None) -> dict[str, Any]:
        """Host a file on the fake CDN; returns a Discord attachment object pointing at it."""
        aid = self.snowflake()
        path = f"/attachments/{aid}/{filename}"
        self.cdn[path] = (data, content_type or "application/octet-stream")
        attachment: dict[str, Any] = {
            "id": str(aid),
            "filename": filename,
            "size": len(data),
            "url": f"{self.base_url}{path}?ex=0&is=0&hm=fake",
            "proxy_url": f"{self.base_url}{path}",
        }
        if content_type:
            attachment["content_type"] = content_type
        size = _image_size(data)
        if size is not None:
            attachment["width"], attachment["height"] = size
        return attachment

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.base_url}{API_PREFIX}"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    async def start(self) -> FakeDiscord:
        self._changed = asyncio.Condition()
        self._app = web.Application(client_max_size=64 * 1024 * 1024)
        self._app.router.add_get("/gateway", self._gateway)
        self._app.router.add_get("/attachments/{tail:.*}", self._cdn)
        self._app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._rest)
        self._runner = web.AppRunner(self._app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def close(self) -> None:
        for session in list(self.sessions):
            if not session.ws.closed:
                await session.ws.close(code=1001)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @contextlib.contextmanager
    def patch_discord_py(self) -> Iterator[None]:
        """Point discord.py's REST base and default gateway at this fake for the block."""
        import yarl
        from discord.gateway import DiscordWebSocket
        from discord.http import Route

        old_base, old_gateway = Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
        Route.BASE = self.api_base
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)
        try:
            yield
        finally:
            Route.BASE = old_base
            DiscordWebSocket.DEFAULT_GATEWAY = old_gateway

    # -- waiting -------------------------------------------------------------------------------
    def mark(self) -> int:
        """The index the next recorded request will get (pass it as ``since``)."""
        return len(self.requests)

    async def _notify(self) -> None:
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    async def wait_until(self, condition: Callable[[], Any], timeout_s: float = 10.0) -> Any:
        """Wait until ``condition()`` is truthy (re-checked after every request and dispatch)."""
        assert self._changed is not None
        result: Any = None

        def check() -> bool:
            nonlocal result
            result = condition()
            return bool(result)

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(check), timeout_s)
        return result

    async def wait_request(
        self,
        predicate: Callable[[RecordedRequest], bool] | None = None,
        *,
        route: str | None = None,
        since: int = 0,
        timeout_s: float = 10.0,
    ) -> RecordedRequest:
        """The first recorded request at index >= ``since`` matching ``route`` and ``predicate``."""

        def find() -> RecordedRequest | None:
            for request in self.requests[since:]:
                if route is not None and request.route != route:
                    continue
                if predicate is None or predicate(request):
                    return request
            return None

        try:
            return await self.wait_until(find, timeout_s)
        except TimeoutError:
            seen = [f"{r.method} {r.path} -> {r.status}" for r in self.requests[since:]]
            raise AssertionError(f"no request matched (route={route}); seen since {since}: {seen}") from None

    def requests_for(self, route: str, since: int = 0) -> list[RecordedRequest]:
        return [r for r in self.requests[since:] if r.route == route]

    async def wait_ready(self, timeout_s: float = 10.0) -> None:
        """Wait until a client has identified (READY and GUILD_CREATE were sent)."""
        await asyncio.wait_for(self.identified.wait(), timeout_s)

    # -- queries for tests ---------------------------------------------------------------------
    def channel_messages(self, channel_id: int) -> list[dict[str, Any]]:
        return [
            m
            for m in self.messages.values()
            if int(m["channel_id"]) == channel_id and not m["flags"] & MESSAGE_FLAG_EPHEMERAL
        ]

    def threads(self) -> list[dict[str, Any]]:
        return [c for c in self.channels.values() if c["type"] in THREAD_TYPES]

    def reaction_users(self, message_id: int, emoji: str) -> list[int]:
        return list(self.reactions.get(message_id, {}).get(emoji, []))

    # -- gateway -------------------------------------------------------------------------------
    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        compress = request.query.get("compress")
        compressor = zlib.compressobj() if compress == "zlib-stream" else None
        session = _Session(ws=ws, compressor=compressor)
        self.sessions.append(session)
        try:
            await self._send(session, {"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms}})
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                payload = json.loads(msg.data)
                await self._gateway_op(session, payload)
        finally:
            if session in self.sessions:
                self.sessions.remove(session)
        return ws

    async def _send(self, session: _Session, payload: dict[str, Any]) -> None:
        async with session.lock:
            if session.ws.closed:
                return
            if payload.get("op") == 0:
                session.seq += 1
                payload = {**payload, "s": session.seq}
            data = json.dumps(payload)
            if session.compressor is not None:
                blob = session.compressor.compress(data.encode()) + session.compressor.flush(zlib.Z_SYNC_FLUSH)
                await session.ws.send_bytes(blob)
            else:
                await session.ws.send_str(data)

    async def _close_session(self, session: _Session, code: int, reason: str) -> None:
        self.gateway_closes.append(code)
        await session.ws.close(code=code, message=reason.encode())
        await self._notify()

    async def _gateway_op(self, session: _Session, payload: dict[str, Any]) -> None:
        op = payload.get("op")
        data = payload.get("d")
        if op == 1:  # HEARTBEAT
            await self._send(session, {"op": 11})
        elif op == 2:  # IDENTIFY
            await self._identify(session, data or {})
        elif op == 6:  # RESUME
            await self._resume(session, data or {})
        elif op == 8:  # REQUEST_GUILD_MEMBERS
            gid = int(data["guild_id"])
            chunk = {
                "guild_id": str(gid),
                "members": list(self.members.get(gid, {}).values()),
                "chunk_index": 0,
                "chunk_count": 1,
                "not_found": [],
            }
            if data.get("nonce"):
                chunk["nonce"] = data["nonce"]
            await self._send(session, {"op": 0, "t": "GUILD_MEMBERS_CHUNK", "d": chunk})

    async def _identify(self, session: _Session, data: dict[str, Any]) -> None:
        if data.get("token") not in (self.token, f"Bot {self.token}"):
            await self._close_session(session, 4004, "Authentication failed.")
            return
        if "intents" not in data:
            await self._close_session(session, 4013, "Invalid intent(s).")
            return
        intents = int(data["intents"])
        allowed_privileged = INTENT_MESSAGE_CONTENT if self.message_content_allowed else 0
        if intents & PRIVILEGED_INTENTS & ~allowed_privileged:
            await self._close_session(session, 4014, "Disallowed intent(s).")
            return
        session.intents = intents
        session.session_id = secrets.token_hex(16)
        session.identified = True
        ready = {
            "v": 10,
            "user": {**self.bot_user, "verified": True, "mfa_enabled": False, "email": None},
            "guilds": [{"id": str(gid), "unavailable": True} for gid in self.guilds],
            "session_id": session.session_id,
            "resume_gateway_url": self.gateway_url,
            "session_type": "normal",
            "application": {"id": str(self.application_id), "flags": self._application_flags()},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "geo_ordered_rtc_regions": [],
            "user_settings": {},
            "_trace": ["fake-discord"],
        }
        if "shard" in data:
            ready["shard"] = data["shard"]
        await self._send(session, {"op": 0, "t": "READY", "d": ready})
        if intents & INTENT_GUILDS:
            for gid in self.guilds:
                await self._send(session, {"op": 0, "t": "GUILD_CREATE", "d": self._guild_create(gid)})
        self.identified.set()
        await self._notify()

    async def _resume(self, session: _Session, data: dict[str, Any]) -> None:
        known = {s.session_id: s for s in self.sessions if s is not session}
        old = known.get(data.get("session_id", ""))
        if data.get("token") not in (self.token, f"Bot {self.token}") or old is None:
            await self._send(session, {"op": 9, "d": False})
            return
        session.intents, session.session_id, session.seq = old.intents, old.session_id, int(data.get("seq") or 0)
        session.identified = True
        await self._send(session, {"op": 0, "t": "RESUMED", "d": {}})

    def _application_flags(self) -> int:
        flags = APP_FLAG_GATEWAY_PRESENCE_LIMITED | APP_FLAG_GATEWAY_GUILD_MEMBERS_LIMITED
        if self.message_content_allowed:
            flags |= APP_FLAG_GATEWAY_MESSAGE_CONTENT_LIMITED
        return flags

    def _guild_create(self, gid: int) -> dict[str, Any]:
        channels = [
            c for c in self.channels.values() if c.get("guild_id") == str(gid) and c["type"] not in THREAD_TYPES
        ]
        threads = [
            c
            for c in self.channels.values()
            if c.get("guild_id") == str(gid) and c["type"] in THREAD_TYPES and not c["thread_metadata"]["archived"]
        ]
        members = list(self.members[gid].values())
        return {
            **self.guilds[gid],
            "joined_at": _now_iso(),
            "large": False,
            "unavailable": False,
            "member_count": len(members),
            "voice_states": [],
            "members": members,
            "channels": channels,
            "threads": threads,
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }

    async def dispatch(self, event: str, data: dict[str, Any]) -> int:
        """Send a DISPATCH (op 0) to every identified session that has the intent for it.

        Returns how many sessions it went to.
        """
        sent = 0
        for session in list(self.sessions):
            if not session.identified or session.ws.closed:
                continue
            body = self._filter_for(session, event, data)
            if body is None:
                continue
            await self._send(session, {"op": 0, "t": event, "d": body})
            sent += 1
        await self._notify()
        return sent

    def _filter_for(self, session: _Session, event: str, data: dict[str, Any]) -> dict[str, Any] | None:
        guild_event = "guild_id" in data
        if event.startswith("MESSAGE_REACTION"):
            return data if session.intents & INTENT_GUILD_MESSAGE_REACTIONS else None
        if event.startswith("MESSAGE_"):
            if guild_event and not session.intents & INTENT_GUILD_MESSAGES:
                return None
            if event in ("MESSAGE_CREATE", "MESSAGE_UPDATE") and not session.intents & INTENT_MESSAGE_CONTENT:
                return self._strip_content(data)
            return data
        if event.startswith(("THREAD_", "CHANNEL_", "GUILD_")):
            return data if session.intents & INTENT_GUILDS else None
        return data

    def _strip_content(self, message: dict[str, Any]) -> dict[str, Any]:
        """Without the Message Content intent, Discord blanks content unless the bot is involved."""
        bot_id = str(self.application_id)
        author_id = message.get("author", {}).get("id")
        mentioned = any(u.get("id") == bot_id for u in message.get("mentions", []))
        if author_id == bot_id or mentioned or "guild_id" not in message:
            return message
        return {**message, "content": "", "embeds": [], "attachments": [], "components": []}

    # -- test-side actions -----------------------------------------------------------------------
    def _member_with_permissions(self, guild_id: int, user: dict[str, Any]) -> dict[str, Any]:
        member = self.members[guild_id].get(int(user["id"])) or self.add_member(guild_id, user)
        return {**member, "permissions": str(self._role_permissions(guild_id, member["roles"]))}

    def _find_command(self, name: str, guild_id: int) -> dict[str, Any]:
        for scope in (guild_id, None):
            for command in self.commands.get(scope, []):
                if command["name"] == name:
                    return command
        synced = {str(k): [c["name"] for c in v] for k, v in self.commands.items()}
        raise FakeDiscordError(f"command /{name} was never synced (synced: {synced})")

    def _interaction(
        self,
        itype: int,
        *,
        data: dict[str, Any] | None,
        user: dict[str, Any] | None,
        channel_id: int | None,
        message: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        user = user or self.owner
        cid = channel_id or self.channel_id
        channel = self.channels[cid]
        gid = int(channel["guild_id"])
        payload: dict[str, Any] = {
            "id": str(self.snowflake()),
            "application_id": str(self.application_id),
            "type": itype,
            "token": "aW50ZXJhY3Rpb24" + secrets.token_urlsafe(48),
            "version": 1,
            "guild_id": str(gid),
            "guild": {"id": str(gid), "locale": "en-US", "features": []},
            "channel_id": str(cid),
            "channel": dict(channel),
            "member": self._member_with_permissions(gid, user),
            "app_permissions": str(ALL_PERMISSIONS),
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(gid)},
            "context": 0,
            "attachment_size_limit": self.attachment_size_limit,
        }
        if data is not None:
            payload["data"] = data
        if message is not None:
            payload["message"] = message
        return payload

    def slash_command(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        subcommand: str | None = None,
        user: dict[str, Any] | None = None,
        channel_id: int | None = None,
        focused: str | None = None,
    ) -> dict[str, Any]:
        """An APPLICATION_COMMAND (or, with ``focused``, AUTOCOMPLETE) interaction payload.

        The command must have been synced by the client: option types come from its definition.
        Attachment options take an attachment object from :meth:`add_cdn_file`.
        """
        cid = channel_id or self.channel_id
        gid = int(self.channels[cid]["guild_id"])
        command = self._find_command(name, gid)
        definitions = command.get("options", [])
        if subcommand is not None:
            sub = next((o for o in definitions if o["name"] == subcommand and o["type"] == OPT_SUB_COMMAND), None)
            if sub is None:
                raise FakeDiscordError(f"/{name} has no subcommand {subcommand!r}")
            definitions = sub.get("options", [])
        resolved: dict[str, Any] = {}
        built: list[dict[str, Any]] = []
        for key, value in (options or {}).items():
            definition = next((o for o in definitions if o["name"] == key), None)
            if definition is None:
                raise FakeDiscordError(f"/{name} {subcommand or ''} has no option {key!r}")
            option: dict[str, Any] = {"name": key, "type": definition["type"]}
            if definition["type"] == OPT_ATTACHMENT:
                resolved.setdefault("attachments", {})[value["id"]] = value
                option["value"] = value["id"]
            elif key == focused:
                option["value"] = str(value)
                option["focused"] = True
            else:
                option["value"] = value
            built.append(option)
        if subcommand is not None:
            built = [{"name": subcommand, "type": OPT_SUB_COMMAND, "options": built}]
        data: dict[str, Any] = {"id": command["id"], "name": name, "type": 1, "options": built}
        if command.get("guild_id"):
            data["guild_id"] = command["guild_id"]
        if resolved:
            data["resolved"] = resolved
        itype = INTERACTION_AUTOCOMPLETE if focused else INTERACTION_APPLICATION_COMMAND
        return self._interaction(itype, data=data, user=user, channel_id=cid)

    def component_click(self, message_id: int, custom_id: str, *, user: dict[str, Any] | None = None) -> dict[str, Any]:
        """A MESSAGE_COMPONENT interaction: ``user`` pressed the button ``custom_id`` of a message."""
        message = self.messages.get(message_id)
        if message is None:
            raise FakeDiscordError(f"no message {message_id}")
        ids = [c.get("custom_id") for row in message.get("components", []) for c in row.get("components", [])]
        if custom_id not in ids:
            raise FakeDiscordError(f"message {message_id} has no component {custom_id!r} (has {ids})")
        data = {"custom_id": custom_id, "component_type": 2}
        return self._interaction(
            INTERACTION_MESSAGE_COMPONENT,
            data=data,
            user=user,
            channel_id=int(message["channel_id"]),
            message=self._message_view(message),
        )

    async def send_interaction(self, payload: dict[str, Any]) -> FakeInteraction:
        """Register ``payload`` (from a builder) and dispatch it as INTERACTION_CREATE."""
        loop = asyncio.get_running_loop()
        interaction = FakeInteraction(
            id=int(payload["id"]),
            token=payload["token"],
            type=payload["type"],
            payload=payload,
            created_at=loop.time(),
            channel_id=int(payload["channel_id"]),
        )
        self.interactions[interaction.id] = interaction
        self._by_token[interaction.token] = interaction
        sent = await self.dispatch("INTERACTION_CREATE", payload)
        if not sent:
            raise FakeDiscordError("no identified gateway session to send the interaction to")
        return interaction

    async def wait_callback(self, interaction: FakeInteraction, timeout_s: float = 10.0) -> RecordedRequest:
        return await self.wait_request(
            lambda r: r.vars.get("interaction_id") == str(interaction.id),
            route="interaction_callback",
            timeout_s=timeout_s,
        )

    def expire_interaction_tokens(self) -> None:
        """Make every interaction token so far expired (as 15 minutes later)."""
        for interaction in self.interactions.values():
            interaction.expired = True

    async def user_message(
        self,
        channel_id: int,
        content: str,
        *,
        user: dict[str, Any] | None = None,
        attachments: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """A user posts a message; it is stored and dispatched as MESSAGE_CREATE."""
        user = user or self.owner
        message = self._new_message(channel_id, user, content=content, attachments=attachments or [])
        gid = int(self.channels[channel_id]["guild_id"])
        member = dict(self.members[gid][int(user["id"])])
        member.pop("user", None)
        await self.dispatch("MESSAGE_CREATE", {**self._message_view(message), "guild_id": str(gid), "member": member})
        return message

    async def user_react(
        self, channel_id: int, message_id: int, emoji: str, *, user: dict[str, Any] | None = None
    ) -> None:
        """A user adds a unicode reaction; dispatched as MESSAGE_REACTION_ADD."""
        user = user or self.owner
        message = self.messages[message_id]
        self.reactions.setdefault(message_id, {}).setdefault(emoji, []).append(int(user["id"]))
        gid = int(self.channels[channel_id]["guild_id"])
        await self.dispatch(
            "MESSAGE_REACTION_ADD",
            {
                "user_id": user["id"],
                "type": 0,
                "channel_id": str(channel_id),
                "message_id": str(message_id),
                "guild_id": str(gid),
                "member": self.members[gid][int(user["id"])],
                "emoji": {"id": None, "name": emoji},
                "message_author_id": message["author"]["id"],
                "burst": False,
                "burst_colors": [],
            },
        )

    # -- messages --------------------------------------------------------------------------------
    def _new_message(
        self,
        channel_id: int,
        author: dict[str, Any],
        *,
        content: str = "",
        attachments: list[dict[str, Any]] | None = None,
        embeds: list[dict[str, Any]] | None = None,
        components: list[dict[str, Any]] | None = None,
        flags: int = 0,
        message_id: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        channel = self.channels.get(channel_id)
        if channel is None:
            raise _HTTPError(404, 10003, "Unknown Channel")
        mid = message_id or self.snowflake()
        message: dict[str, Any] = {
            "id": str(mid),
            "type": 0,
            "channel_id": str(channel_id),
            "author": author,
            "content": content,
            "timestamp": _now_iso(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": self._mentions(content),
            "mention_roles": [],
            "attachments": attachments or [],
            "embeds": embeds or [],
            "components": components or [],
            "pinned": False,
            "flags": flags,
        }
        if extra:
            message.update(extra)
        self.messages[mid] = message
        if not flags & MESSAGE_FLAG_EPHEMERAL:
            channel["last_message_id"] = str(mid)
            if channel["type"] in THREAD_TYPES:
                channel["message_count"] = channel.get("message_count", 0) + 1
                channel["total_message_sent"] = channel.get("total_message_sent", 0) + 1
        return message

    def _mentions(self, content: str) -> list[dict[str, Any]]:
        return [self.users[int(uid)] for uid in _MENTION.findall(content or "") if int(uid) in self.users]

    def _message_view(self, message: dict[str, Any]) -> dict[str, Any]:
        """A message as Discord returns it (with its reactions)."""
        view = dict(message)
        reactions = self.reactions.get(int(message["id"]), {})
        if reactions:
            bot_id = int(self.application_id)
            view["reactions"] = [
                {
                    "emoji": {"id": None, "name": emoji},
                    "count": len(users),
                    "count_details": {"burst": 0, "normal": len(users)},
                    "me": bot_id in users,
                    "me_burst": False,
                    "burst_colors": [],
                }
                for emoji, users in reactions.items()
                if users
            ]
        return view

    async def _dispatch_message(self, event: str, message: dict[str, Any]) -> None:
        if message["flags"] & MESSAGE_FLAG_EPHEMERAL:
            return
        channel = self.channels[int(message["channel_id"])]
        body = self._message_view(message)
        if channel.get("guild_id"):
            body["guild_id"] = channel["guild_id"]
            member = self.members[int(channel["guild_id"])].get(int(message["author"]["id"]))
            if member is not None:
                body["member"] = {k: v for k, v in member.items() if k != "user"}
        await self.dispatch(event, body)

    def _check_message_body(self, body: dict[str, Any], files: list[UploadedFile], *, creating: bool) -> None:
        content = body.get("content")
        if content is not None and len(content) > 2000:
            raise _form_error("content", "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length.")
        if creating and not (
            content or body.get("embeds") or files or body.get("components") or body.get("sticker_ids")
        ):
            raise _HTTPError(400, 50006, "Cannot send an empty message")
        for upload in files:
            if len(upload.data) > self.attachment_size_limit:
                raise _HTTPError(413, 40005, "Request entity too large")
        if len(files) > 10:
            raise _form_error("files", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
        for r, row in enumerate(body.get("components") or []):
            if row.get("type") != 1:
                continue
            items = row.get("components") or []
            if not 1 <= len(items) <= 5:
                raise _form_error(
                    f"components.{r}.components", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length."
                )
            for c, item in enumerate(items):
                if item.get("type") == 2 and item.get("style") != 5:
                    custom_id = item.get("custom_id") or ""
                    if not 1 <= len(custom_id) <= 100:
                        raise _form_error(
                            f"components.{r}.components.{c}.custom_id",
                            "BASE_TYPE_BAD_LENGTH",
                            "Must be between 1 and 100 in length.",
                        )

    def _attachments_from(
        self, body: dict[str, Any], files: list[UploadedFile], channel_id: int
    ) -> list[dict[str, Any]]:
        described = {str(a.get("id")): a for a in body.get("attachments") or []}
        out = []
        for upload in files:
            index = upload.field_name.removeprefix("files[").removesuffix("]")
            meta = described.get(index, {})
            filename = meta.get("filename") or upload.filename
            attachment = self.add_cdn_file(filename, upload.data, upload.content_type)
            if meta.get("description"):
                attachment["description"] = meta["description"]
            out.append(attachment)
        return out

    def _apply_edit(self, message: dict[str, Any], body: dict[str, Any], files: list[UploadedFile]) -> None:
        self._check_message_body(body, files, creating=False)
        for key in ("content", "embeds", "components"):
            if key in body and body[key] is not None:
                message[key] = body[key]
        if "content" in body:
            message["mentions"] = self._mentions(message["content"])
        if "attachments" in body or files:
            keep_ids = {str(a.get("id")) for a in body.get("attachments") or []}
            kept = [a for a in message["attachments"] if a["id"] in keep_ids]
            message["attachments"] = kept + self._attachments_from(body, files, int(message["channel_id"]))
        if "flags" in body and body["flags"] is not None:
            # Only SUPPRESS_EMBEDS can be changed by an edit; keep the rest.
            message["flags"] = (message["flags"] & ~4) | (int(body["flags"]) & 4)
        message["edited_timestamp"] = _now_iso()

    # -- REST --------------------------------------------------------------------------------------
    async def _cdn(self, request: web.Request) -> web.Response:
        path = request.path
        if not self.cdn_available or path not in self.cdn:
            return web.Response(status=404, text="This content is no longer available.")
        data, content_type = self.cdn[path]
        return web.Response(body=data, content_type=content_type)

    async def _read_body(self, request: web.Request) -> tuple[Any, list[UploadedFile]]:
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            body: Any = None
            files: list[UploadedFile] = []
            while True:
                part = await reader.next()
                if part is None:
                    break
                name = part.name or ""  # type: ignore[union-attr]
                data = await part.read()  # type: ignore[union-attr]
                if name == "payload_json":
                    body = json.loads(bytes(data))
                elif name.startswith("files["):
                    files.append(
                        UploadedFile(
                            field_name=name,
                            filename=part.filename or "file",  # type: ignore[union-attr]
                            content_type=part.headers.get("Content-Type"),  # type: ignore[union-attr]
                            data=bytes(data),
                        )
                    )
            return body if body is not None else {}, files
        raw = await request.read()
        if not raw:
            return None, []
        return json.loads(raw), []

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        arrived = loop.time()
        raw_tail = request.raw_path.split("?", 1)[0][len(API_PREFIX) :]
        segments = [unquote(s) for s in raw_tail.strip("/").split("/")] if raw_tail.strip("/") else []
        path = "/" + "/".join(segments)
        try:
            body, files = await self._read_body(request)
        except (json.JSONDecodeError, ValueError):
            body, files = None, []
        route_name, handler, variables = self._match(request.method, segments)
        status: int
        response: Any
        try:
            if handler is None:
                raise _HTTPError(404, 0, "404: Not Found")
            if route_name not in _NO_AUTH_ROUTES and request.headers.get("Authorization") != f"Bot {self.token}":
                raise _HTTPError(401, 0, "401: Unauthorized")
            if route_name in self.forbidden_routes:
                raise _HTTPError(403, 50013, "Missing Permissions")
            status, response = await handler(request, variables, body, files)
        except _HTTPError as exc:
            status, response = exc.status, exc.body
        self.requests.append(
            RecordedRequest(
                index=len(self.requests),
                method=request.method,
                path=path,
                route=route_name,
                params=dict(request.query),
                json=body,
                files=files,
                status=status,
                response=response,
                at=arrived,
                vars=variables,
            )
        )
        await self._notify()
        if status == 204 or response is None:
            return web.Response(status=204)
        # Discord answers exactly "application/json" (discord.py compares the header verbatim).
        return web.Response(
            body=json.dumps(response).encode(), status=status, headers={"Content-Type": "application/json"}
        )

    def _match(self, method: str, segments: list[str]) -> tuple[str, Any, dict[str, str]]:
        for route_method, pattern, name, handler_name in _ROUTES:
            if route_method != method or len(pattern) != len(segments):
                continue
            variables: dict[str, str] = {}
            for want, got in zip(pattern, segments, strict=True):
                if want.startswith("{"):
                    variables[want.strip("{}")] = got
                elif want != got:
                    break
            else:
                return name, getattr(self, handler_name), variables
        return "unknown", None, {}

    # Handlers: (request, vars, body, files) -> (status, json)
    async def _h_gateway(self, *_: Any) -> tuple[int, Any]:
        return 200, {"url": self.gateway_url}

    async def _h_gateway_bot(self, *_: Any) -> tuple[int, Any]:
        return 200, {
            "url": self.gateway_url,
            "shards": 1,
            "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1},
        }

    async def _h_me(self, *_: Any) -> tuple[int, Any]:
        return 200, {**self.bot_user, "verified": True, "mfa_enabled": False, "email": None}

    async def _h_application(self, *_: Any) -> tuple[int, Any]:
        return 200, {
            "id": str(self.application_id),
            "name": "Persona Studio (fake)",
            "icon": None,
            "description": "",
            "summary": "",
            "type": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "verify_key": "0" * 64,
            "flags": self._application_flags(),
            "owner": self.owner,
            "team": None,
            "bot": self.bot_user,
            "interactions_endpoint_url": None,
            "redirect_uris": [],
            "approximate_guild_count": len(self.guilds),
        }

    def _check_app(self, variables: dict[str, str]) -> None:
        if variables.get("app_id") != str(self.application_id):
            raise _HTTPError(404, 10002, "Unknown Application")

    async def _h_put_global_commands(self, request: Any, v: dict[str, str], body: Any, _f: Any) -> tuple[int, Any]:
        self._check_app(v)
        return 200, self._store_commands(None, body)

    async def _h_put_guild_commands(self, request: Any, v: dict[str, str], body: Any, _f: Any) -> tuple[int, Any]:
        self._check_app(v)
        gid = int(v["guild_id"])
        if gid not in self.guilds:
            raise _HTTPError(403, 50001, "Missing Access")
        return 200, self._store_commands(gid, body)

    async def _h_get_global_commands(self, request: Any, v: dict[str, str], *_: Any) -> tuple[int, Any]:
        self._check_app(v)
        return 200, self.commands.get(None, [])

    async def _h_get_guild_commands(self, request: Any, v: dict[str, str], *_: Any) -> tuple[int, Any]:
        self._check_app(v)
        return 200, self.commands.get(int(v["guild_id"]), [])

    def _store_commands(self, guild_id: int | None, body: Any) -> list[dict[str, Any]]:
        if not isinstance(body, list):
            raise _form_error("_", "LIST_TYPE_CONVERT", "Only iterables may be used in a ListType")
        if len(body) > 100:
            raise _form_error("_", "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")
        previous = {c["name"]: c for c in self.commands.get(guild_id, [])}
        stored = []
        for index, command in enumerate(body):
            self._validate_command(command, str(index))
            cid = previous[command["name"]]["id"] if command["name"] in previous else str(self.snowflake())
            entry = {
                **command,
                "id": cid,
                "application_id": str(self.application_id),
                "version": str(self.snowflake()),
                "type": command.get("type", 1),
            }
            if guild_id is not None:
                entry["guild_id"] = str(guild_id)
            stored.append(entry)
        self.commands[guild_id] = stored
        return stored

    def _validate_command(self, command: dict[str, Any], where: str) -> None:
        name = command.get("name", "")
        if not _COMMAND_NAME.match(name) or name != name.lower():
            raise _form_error(f"{where}.name", "APPLICATION_COMMAND_INVALID_NAME", f"Command name is invalid: {name!r}")
        if command.get("type", 1) == 1 and not 1 <= len(command.get("description", "")) <= 100:
            raise _form_error(f"{where}.description", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
        options = command.get("options") or []
        if len(options) > 25:
            raise _form_error(f"{where}.options", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
        seen_optional = False
        for index, option in enumerate(options):
            here = f"{where}.options.{index}"
            if option.get("type") not in range(1, 12):
                raise _form_error(f"{here}.type", "BASE_TYPE_CHOICES", "Value must be one of 1..11.")
            if option["type"] in (OPT_SUB_COMMAND, OPT_SUB_COMMAND_GROUP):
                self._validate_command({**option, "type": 1}, here)
                continue
            if not _COMMAND_NAME.match(option.get("name", "")):
                raise _form_error(f"{here}.name", "APPLICATION_COMMAND_INVALID_NAME", "Option name is invalid")
            if not 1 <= len(option.get("description", "")) <= 100:
                raise _form_error(f"{here}.description", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
            if option.get("required"):
                if seen_optional:
                    raise _form_error(
                        f"{here}.required",
                        "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                        "Required options must be placed before non-required options",
                    )
            else:
                seen_optional = True
            choices = option.get("choices") or []
            if len(choices) > 25:
                raise _form_error(f"{here}.choices", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
            if choices and option.get("autocomplete"):
                raise _form_error(
                    f"{here}.autocomplete",
                    "AUTOCOMPLETE_CHOICES_CONFLICT",
                    "Autocomplete and choices cannot both be set",
                )

    # interactions
    async def _h_callback(
        self, request: web.Request, v: dict[str, str], body: Any, files: list[UploadedFile]
    ) -> tuple[int, Any]:
        loop = asyncio.get_running_loop()
        interaction = self.interactions.get(int(v["interaction_id"]))
        if interaction is None or interaction.token != v["token"]:
            raise _HTTPError(404, 10062, "Unknown interaction")
        if loop.time() - interaction.created_at > self.ack_deadline_s:
            interaction.late_callback = True
            raise _HTTPError(404, 10062, "Unknown interaction")
        if interaction.callback_type is not None:
            raise _HTTPError(400, 40060, "Interaction has already been acknowledged.")
        if not isinstance(body, dict) or "type" not in body:
            raise _form_error("type", "BASE_TYPE_REQUIRED", "This field is required")
        ctype = int(body["type"])
        if ctype not in _ALLOWED_CALLBACKS.get(interaction.type, set()):
            raise _HTTPError(
                400, 50035, f"Interaction callback type {ctype} is not valid for interaction type {interaction.type}"
            )
        data = body.get("data") or {}
        message: dict[str, Any] | None = None
        flags = int(data.get("flags") or 0)
        if ctype == CALLBACK_CHANNEL_MESSAGE:
            self._check_message_body(data, files, creating=True)
            message = self._interaction_message(interaction, data, files, flags & MESSAGE_FLAG_EPHEMERAL)
            interaction.original_message_id = int(message["id"])
            await self._dispatch_message("MESSAGE_CREATE", message)
        elif ctype == CALLBACK_DEFERRED_CHANNEL_MESSAGE:
            message = self._interaction_message(
                interaction, {}, [], (flags & MESSAGE_FLAG_EPHEMERAL) | MESSAGE_FLAG_LOADING
            )
            interaction.original_message_id = int(message["id"])
            await self._dispatch_message("MESSAGE_CREATE", message)
        elif ctype in (CALLBACK_DEFERRED_UPDATE_MESSAGE, CALLBACK_UPDATE_MESSAGE):
            target = int(interaction.payload["message"]["id"])
            interaction.original_message_id = target
            if ctype == CALLBACK_UPDATE_MESSAGE:
                message = self.messages[target]
                self._apply_edit(message, data, files)
                await self._dispatch_message("MESSAGE_UPDATE", message)
        elif ctype == CALLBACK_AUTOCOMPLETE_RESULT:
            if len(data.get("choices") or []) > 25:
                raise _form_error("data.choices", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
        interaction.callback_type = ctype
        interaction.callback_at = loop.time()
        interaction.callback_data = data
        if request.query.get("with_response") not in ("1", "true", "True"):
            return 204, None
        result: dict[str, Any] = {
            "interaction": {
                "id": str(interaction.id),
                "type": interaction.type,
                "response_message_loading": ctype == CALLBACK_DEFERRED_CHANNEL_MESSAGE,
                "response_message_ephemeral": bool(flags & MESSAGE_FLAG_EPHEMERAL),
            }
        }
        if interaction.original_message_id is not None:
            result["interaction"]["response_message_id"] = str(interaction.original_message_id)
        if message is not None:
            result["resource"] = {"type": ctype, "message": self._message_view(message)}
        elif ctype != CALLBACK_AUTOCOMPLETE_RESULT:
            result["resource"] = {"type": ctype}
        return 200, result

    def _interaction_message(
        self, interaction: FakeInteraction, data: dict[str, Any], files: list[UploadedFile], flags: int
    ) -> dict[str, Any]:
        user = interaction.payload.get("member", {}).get("user") or interaction.payload.get("user")
        return self._new_message(
            interaction.channel_id,
            self.bot_user,
            content=data.get("content") or "",
            embeds=data.get("embeds"),
            components=data.get("components"),
            attachments=self._attachments_from(data, files, interaction.channel_id),
            flags=flags,
            extra={
                "type": 20 if interaction.type == INTERACTION_APPLICATION_COMMAND else 19,
                "webhook_id": str(self.application_id),
                "application_id": str(self.application_id),
                "interaction_metadata": {
                    "id": str(interaction.id),
                    "type": interaction.type,
                    "user": user,
                    "authorizing_integration_owners": {"0": interaction.payload.get("guild_id")},
                },
            },
        )

    def _webhook_interaction(self, v: dict[str, str]) -> FakeInteraction:
        if v.get("app_id") != str(self.application_id):
            raise _HTTPError(404, 10015, "Unknown Webhook")
        interaction = self._by_token.get(v["token"])
        if interaction is None:
            raise _HTTPError(404, 10015, "Unknown Webhook")
        age = asyncio.get_running_loop().time() - interaction.created_at
        if interaction.expired or age > self.token_lifetime_s:
            raise _HTTPError(401, 50027, "Invalid Webhook Token")
        if interaction.callback_type is None:
            raise _HTTPError(404, 10015, "Unknown Webhook")
        return interaction

    def _webhook_message(self, interaction: FakeInteraction, message_ref: str) -> dict[str, Any]:
        if message_ref == "@original":
            mid = interaction.original_message_id
            if mid is None or mid not in self.messages:
                raise _HTTPError(404, 10008, "Unknown Message")
            return self.messages[mid]
        message = self.messages.get(int(message_ref)) if message_ref.isdigit() else None
        if message is None or message.get("interaction_metadata", {}).get("id") != str(interaction.id):
            raise _HTTPError(404, 10008, "Unknown Message")
        return message

    async def _h_followup(
        self, request: web.Request, v: dict[str, str], body: Any, files: list[UploadedFile]
    ) -> tuple[int, Any]:
        interaction = self._webhook_interaction(v)
        body = body or {}
        self._check_message_body(body, files, creating=True)
        original = self.messages.get(interaction.original_message_id or 0)
        if original is not None and original["flags"] & MESSAGE_FLAG_LOADING:
            # Discord: the first followup after a deferred response edits the "thinking" message,
            # and keeps that message's ephemerality.
            original["flags"] &= ~MESSAGE_FLAG_LOADING
            self._apply_edit(original, body, files)
            await self._dispatch_message("MESSAGE_UPDATE", original)
            message = original
        else:
            flags = int(body.get("flags") or 0) & MESSAGE_FLAG_EPHEMERAL
            message = self._interaction_message(interaction, body, files, flags)
            await self._dispatch_message("MESSAGE_CREATE", message)
        return 200, self._message_view(message)

    async def _h_webhook_get(self, request: web.Request, v: dict[str, str], *_: Any) -> tuple[int, Any]:
        interaction = self._webhook_interaction(v)
        return 200, self._message_view(self._webhook_message(interaction, v["message_id"]))

    async def _h_webhook_edit(
        self, request: web.Request, v: dict[str, str], body: Any, files: list[UploadedFile]
    ) -> tuple[int, Any]:
        interaction = self._webhook_interaction(v)
        message = self._webhook_message(interaction, v["message_id"])
        message["flags"] &= ~MESSAGE_FLAG_LOADING
        self._apply_edit(message, body or {}, files)
        await self._dispatch_message("MESSAGE_UPDATE", message)
        return 200, self._message_view(message)

    async def _h_webhook_delete(self, request: web.Request, v: dict[str, str], *_: Any) -> tuple[int, Any]:
        interaction = self._webhook_interaction(v)
        message = self._webhook_message(interaction, v["message_id"])
        await self._delete_message(message)
        return 204, None

    async def _delete_message(self, message: dict[str, Any]) -> None:
        mid = int(message["id"])
        self.messages.pop(mid, None)
        self.reactions.pop(mid, None)
        if not message["flags"] & MESSAGE_FLAG_EPHEMERAL:
            channel = self.channels[int(message["channel_id"])]
            body = {"id": str(mid), "channel_id": message["channel_id"]}
            if channel.get("guild_id"):
                body["guild_id"] = channel["guild_id"]
            await self.dispatch("MESSAGE_DELETE", body)

    # channels and messages
    def _channel(self, v: dict[str, str]) -> dict[str, Any]:
        channel = self.channels.get(int(v["channel_id"])) if v["channel_id"].isdigit() else None
        if channel is None:
            raise _HTTPError(404, 10003, "Unknown Channel")
        return channel

    def _message(self, v: dict[str, str]) -> dict[str, Any]:
        channel = self._channel(v)
        message = self.messages.get(int(v["message_id"])) if v["message_id"].isdigit() else None
        if message is None or message["channel_id"] != channel["id"] or message["flags"] & MESSAGE_FLAG_EPHEMERAL:
            raise _HTTPError(404, 10008, "Unknown Message")
        return message

    async def _h_get_channel(self, request: web.Request, v: dict[str, str], *_: Any) -> tuple[int, Any]:
        return 200, self._channel(v)

    async def _h_get_messages(self, request: web.Request, v: dict[str, str], *_: Any) -> tuple[int, Any]:
        channel = self._channel(v)
        limit = int(request.query.get("limit", "50"))
        found = sorted(self.channel_messages(int(channel["id"])), key=lambda m: int(m["id"]), reverse=True)
        return 200, [self._message_view(m) for m in found[:limit]]

    async def _h_get_message(self, request: web.Request, v: dict[str, str], *_: Any) -> tuple[int, Any]:
        return 200, self._message_view(self._message(v))

    async def _h_create_message(
        self, request: web.Request, v: dict[str, str], body: Any, files: list[UploadedFile]
    ) -> tuple[int, Any]:
        channel = self._channel(v)
        body = body or {}
        if channel["type"] in THREAD_TYPES and channel["thread_metadata"].get("locked"):
            raise _HTTPError(400, 50083, "Thread is archived")
        self._check_message_body(body, files, creating=True)
        extra: dict[str, Any] = {}
        reference = body.get("message_reference")
        if reference:
            extra["message_reference"] = {**reference, "channel_id": channel["id"]}
            extra["type"] = 19
        if body.get("nonce") is not None:
            extra["nonce"] = body["nonce"]
        if channel["type"] in THREAD_TYPES:
            channel["thread_metadata"]["archived"] = False
        message = self._new_message(
            int(channel["id"]),
            self.bot_user,
            content=body.get("content") or "",
            embeds=body.get("embeds"),
            components=body.get("components"),
            attachments=self._attachments_from(body, files, int(channel["id"])),
            flags=int(body.get("flags") or 0) & 4,
            extra=extra,
        )
        await self._dispatch_message("MESSAGE_CREATE", message)
        return 200, self._message_view(message)

    async def _h_edit_message(
        self, request: web.Request, v: dict[str, str], body: Any, files: list[UploadedFile]
    ) -> tuple[int, Any]:
        message = self._message(v)
        if message["author"]["id"] != str(self.application_id):
            raise _HTTPError(403, 50005, "Cannot edit a message authored by another user")
        self._apply_edit(message, body or {}, files)
        await self._dispatch_message("MESSAGE_UPDATE", message)
        return 200, self._message_view(message)

    async def _h_delete_message(self, request: web.Request, v: dict[str, str], *_: Any) -> tuple[int, Any]:
        await self._delete_message(self._message(v))
        return 204, None

    async def _h_add_reaction(self, request: web.Request, v: dict[str, str], *_: Any) -> tuple[int, Any]:
        message = self._message(v)
        emoji = v["emoji"]
        if not emoji or (emoji.isascii() and ":" not in emoji):
            raise _HTTPError(400, 10014, "Unknown Emoji")
        users = self.reactions.setdefault(int(message["id"]), {}).setdefault(emoji, [])
        if len(self.reactions[int(message["id"])]) > 20:
            raise _HTTPError(400, 30010, "Maximum number of reactions reached (20)")
        if self.application_id not in users:
            users.append(self.application_id)
            gid = self.channels[int(message["channel_id"])]["guild_id"]
            await self.dispatch(
                "MESSAGE_REACTION_ADD",
                {
                    "user_id": str(self.application_id),
                    "type": 0,
                    "channel_id": message["channel_id"],
                    "message_id": message["id"],
                    "guild_id": gid,
                    "member": self.members[int(gid)][self.application_id],
                    "emoji": {"id": None, "name": emoji},
                    "message_author_id": message["author"]["id"],
                    "burst": False,
                    "burst_colors": [],
                },
            )
        return 204, None

    async def _h_remove_reaction(self, request: web.Request, v: dict[str, str], *_: Any) -> tuple[int, Any]:
        message = self._message(v)
        user_id = self.application_id if v["user_id"] == "@me" else int(v["user_id"])
        users = self.reactions.get(int(message["id"]), {}).get(v["emoji"], [])
        if user_id in users:
            users.remove(user_id)
            gid = self.channels[int(message["channel_id"])]["guild_id"]
            await self.dispatch(
                "MESSAGE_REACTION_REMOVE",
                {
                    "user_id": str(user_id),
                    "type": 0,
                    "channel_id": message["channel_id"],
                    "message_id": message["id"],
                    "guild_id": gid,
                    "emoji": {"id": None, "name": v["emoji"]},
                    "burst": False,
                },
            )
        return 204, None

    def _new_thread(
        self, parent: dict[str, Any], body: dict[str, Any], *, thread_id: int, thread_type: int
    ) -> dict[str, Any]:
        name = body.get("name") or ""
        if not 1 <= len(name) <= 100:
            raise _form_error("name", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
        archive = int(body.get("auto_archive_duration") or 4320)
        if archive not in _AUTO_ARCHIVE:
            raise _form_error(
                "auto_archive_duration", "BASE_TYPE_CHOICES", "Value must be one of {60, 1440, 4320, 10080}."
            )
        if parent["type"] in THREAD_TYPES or parent["type"] == CHANNEL_DM:
            raise _HTTPError(400, 50024, "Cannot execute action on this channel type")
        now = _now_iso()
        thread = {
            "id": str(thread_id),
            "type": thread_type,
            "guild_id": parent["guild_id"],
            "parent_id": parent["id"],
            "owner_id": str(self.application_id),
            "name": name,
            "last_message_id": None,
            "message_count": 0,
            "total_message_sent": 0,
            "member_count": 1,
            "rate_limit_per_user": int(body.get("rate_limit_per_user") or 0),
            "flags": 0,
            "applied_tags": [],
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": archive,
                "archive_timestamp": now,
                "locked": False,
                "create_timestamp": now,
                **({"invitable": bool(body.get("invitable", True))} if thread_type == CHANNEL_PRIVATE_THREAD else {}),
            },
        }
        self.channels[thread_id] = thread
        return thread

    async def _announce_thread(self, thread: dict[str, Any]) -> dict[str, Any]:
        member = {
            "id": thread["id"],
            "user_id": str(self.application_id),
            "join_timestamp": _now_iso(),
            "flags": 1,
        }
        await self.dispatch("THREAD_CREATE", {**thread, "newly_created": True, "member": member})
        return {**thread, "member": member}

    async def _h_thread_from_message(
        self, request: web.Request, v: dict[str, str], body: Any, _f: Any
    ) -> tuple[int, Any]:
        parent = self._channel(v)
        message = self._message(v)
        if message.get("thread") or int(message["id"]) in self.channels:
            raise _HTTPError(400, 160004, "A thread has already been created for this message")
        thread = self._new_thread(parent, body or {}, thread_id=int(message["id"]), thread_type=CHANNEL_PUBLIC_THREAD)
        message["thread"] = thread
        return 201, await self._announce_thread(thread)

    async def _h_thread_without_message(
        self, request: web.Request, v: dict[str, str], body: Any, _f: Any
    ) -> tuple[int, Any]:
        parent = self._channel(v)
        body = body or {}
        thread_type = int(body.get("type") or CHANNEL_PRIVATE_THREAD)
        if thread_type not in (CHANNEL_PUBLIC_THREAD, CHANNEL_PRIVATE_THREAD, 10):
            raise _form_error("type", "BASE_TYPE_CHOICES", "Value must be one of {10, 11, 12}.")
        thread = self._new_thread(parent, body, thread_id=self.snowflake(), thread_type=thread_type)
        return 201, await self._announce_thread(thread)

    async def _h_join_thread(self, request: web.Request, v: dict[str, str], *_: Any) -> tuple[int, Any]:
        channel = self._channel(v)
        if channel["type"] not in THREAD_TYPES:
            raise _HTTPError(400, 50024, "Cannot execute action on this channel type")
        return 204, None

    async def _h_typing(self, request: web.Request, v: dict[str, str], *_: Any) -> tuple[int, Any]:
        self._channel(v)
        return 204, None

    async def _h_dm_channel(self, request: web.Request, v: dict[str, str], body: Any, _f: Any) -> tuple[int, Any]:
        recipient = int((body or {}).get("recipient_id", 0))
        if recipient not in self.users:
            raise _HTTPError(400, 50035, "Invalid Form Body")
        for channel in self.channels.values():
            if channel["type"] == CHANNEL_DM and channel["recipients"][0]["id"] == str(recipient):
                return 200, channel
        cid = self.snowflake()
        channel = {
            "id": str(cid),
            "type": CHANNEL_DM,
            "last_message_id": None,
            "flags": 0,
            "recipients": [self.users[recipient]],
        }
        self.channels[cid] = channel
        return 200, channel

    async def _h_get_guild(self, request: web.Request, v: dict[str, str], *_: Any) -> tuple[int, Any]:
        gid = int(v["guild_id"])
        if gid not in self.guilds:
            raise _HTTPError(404, 10004, "Unknown Guild")
        return 200, self.guilds[gid]

    async def _h_guild_channels(self, request: web.Request, v: dict[str, str], *_: Any) -> tuple[int, Any]:
        gid = v["guild_id"]
        return 200, [c for c in self.channels.values() if c.get("guild_id") == gid and c["type"] not in THREAD_TYPES]

    async def _h_guild_member(self, request: web.Request, v: dict[str, str], *_: Any) -> tuple[int, Any]:
        member = self.members.get(int(v["guild_id"]), {}).get(int(v["user_id"]))
        if member is None:
            raise _HTTPError(404, 10007, "Unknown Member")
        return 200, member


_NO_AUTH_ROUTES = {"interaction_callback", "followup", "webhook_get", "webhook_edit", "webhook_delete", "gateway"}

_ROUTES: list[tuple[str, tuple[str, ...], str, str]] = [
    (m, tuple(p.strip("/").split("/")), name, handler)
    for m, p, name, handler in [
        ("GET", "/gateway", "gateway", "_h_gateway"),
        ("GET", "/gateway/bot", "gateway_bot", "_h_gateway_bot"),
        ("GET", "/users/@me", "get_me", "_h_me"),
        ("POST", "/users/@me/channels", "create_dm", "_h_dm_channel"),
        ("GET", "/oauth2/applications/@me", "application_info", "_h_application"),
        ("GET", "/applications/@me", "application_info", "_h_application"),
        ("PUT", "/applications/{app_id}/commands", "sync_global_commands", "_h_put_global_commands"),
        ("GET", "/applications/{app_id}/commands", "get_global_commands", "_h_get_global_commands"),
        ("PUT", "/applications/{app_id}/guilds/{guild_id}/commands", "sync_guild_commands", "_h_put_guild_commands"),
        ("GET", "/applications/{app_id}/guilds/{guild_id}/commands", "get_guild_commands", "_h_get_guild_commands"),
        ("POST", "/interactions/{interaction_id}/{token}/callback", "interaction_callback", "_h_callback"),
        ("POST", "/webhooks/{app_id}/{token}", "followup", "_h_followup"),
        ("GET", "/webhooks/{app_id}/{token}/messages/{message_id}", "webhook_get", "_h_webhook_get"),
        ("PATCH", "/webhooks/{app_id}/{token}/messages/{message_id}", "webhook_edit", "_h_webhook_edit"),
        ("DELETE", "/webhooks/{app_id}/{token}/messages/{message_id}", "webhook_delete", "_h_webhook_delete"),
        ("GET", "/channels/{channel_id}", "get_channel", "_h_get_channel"),
        ("GET", "/channels/{channel_id}/messages", "get_messages", "_h_get_messages"),
        ("POST", "/channels/{channel_id}/messages", "create_message", "_h_create_message"),
        ("GET", "/channels/{channel_id}/messages/{message_id}", "get_message", "_h_get_message"),
        ("PATCH", "/channels/{channel_id}/messages/{message_id}", "edit_message", "_h_edit_message"),
        ("DELETE", "/channels/{channel_id}/messages/{message_id}", "delete_message", "_h_delete_message"),
        (
            "PUT",
            "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me",
            "add_reaction",
            "_h_add_reaction",
        ),
        (
            "DELETE",
            "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/{user_id}",
            "remove_reaction",
            "_h_remove_reaction",
        ),
        (
            "POST",
            "/channels/{channel_id}/messages/{message_id}/threads",
            "create_thread_from_message",
            "_h_thread_from_message",
        ),
        ("POST", "/channels/{channel_id}/threads", "create_thread", "_h_thread_without_message"),
        ("PUT", "/channels/{channel_id}/thread-members/@me", "join_thread", "_h_join_thread"),
        ("POST", "/channels/{channel_id}/typing", "typing", "_h_typing"),
        ("GET", "/guilds/{guild_id}", "get_guild", "_h_get_guild"),
        ("GET", "/guilds/{guild_id}/channels", "get_guild_channels", "_h_guild_channels"),
        ("GET", "/guilds/{guild_id}/members/{user_id}", "get_member", "_h_guild_member"),
    ]
]


def _image_size(data: bytes) -> tuple[int, int] | None:
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:
        return None
