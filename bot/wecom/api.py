"""An async client for the WeCom (企业微信) server API, as a self-built app uses it.

- ``access_token`` (gettoken) is cached in memory or in redis (one key per corp id + agent, shared
  by every process), refreshed ``TOKEN_MARGIN_S`` before it expires and again when a call answers
  40014 (invalid) or 42001 (expired); that call is then retried once.
- ``send_text`` splits at 2048 bytes on UTF-8 boundaries; ``upload_media`` + ``send_image`` /
  ``send_file``; ``send_card`` sends a button_interaction template_card whose button keys are
  ``<button>:<turn_id>``; ``download_media`` fetches a user's image by MediaId.
- Every message to a user passes a per-user :class:`~bot.wecom.rate_limit.RateLimiter` (30 a
  minute). Optional messages (progress) are skipped rather than delayed when the user's budget
  runs low.
- The token caches live in :mod:`bot.wecom.tokens`, the send limit in :mod:`bot.wecom.rate_limit`.

Secrets (corpsecret, access_token) travel in query strings; errors raised here never carry URLs,
and nothing here logs them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from bot.frontend import split_text, utf8_size
from bot.wecom.rate_limit import RateLimiter
from bot.wecom.tokens import MemoryTokenStore, TokenStore
from engine.specs import ReferenceRole

log = logging.getLogger(__name__)

DEFAULT_API_BASE = "https://qyapi.weixin.qq.com"
TEXT_LIMIT_BYTES = 2048
TOKEN_ERRCODES = frozenset({40014, 42001})  # invalid / expired access_token
MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024
#: a video message's MP4 (temporary media, type=video) may be at most 10 MB
VIDEO_LIMIT_BYTES = 10 * 1024 * 1024

#: Card buttons: command -> (label, style). WeCom styles: 1 blue, 2 grey, 3 red, 4 ...
CARD_BUTTONS: dict[str, tuple[str, int]] = {
    "approve": ("通过", 1),
    "regen": ("重来", 2),
    "undo": ("撤销", 2),
    "reject": ("退回", 2),  # a review request's "request changes"
}
#: The role buttons under an image (key ``ref:<role>:<blob key>``): label and style.
ROLE_BUTTONS: dict[str, tuple[str, int]] = {
    ReferenceRole.PRODUCT: ("商品", 1),
    ReferenceRole.SCENE: ("场景", 2),
    ReferenceRole.FACE: ("人脸", 2),
}
#: What a clicked button turns into (update_template_card replace_name).
CLICKED_LABELS: dict[str, str] = {
    "approve": "已通过",
    "regen": "已重来",
    "undo": "已撤销",
    "cancel": "已取消",
    "reject": "已退回",
    ReferenceRole.PRODUCT: "已选：商品",
    ReferenceRole.SCENE: "已选：场景",
    ReferenceRole.FACE: "已选：人脸",
}


def text_pieces(text: str) -> list[str]:
    """``text`` in pieces of at most 2048 UTF-8 bytes (a text message's limit)."""
    return split_text(text, TEXT_LIMIT_BYTES, utf8_size)


class WeComAPIError(Exception):
    """The API answered an error code, or could not be reached. Never carries secrets."""

    def __init__(self, errcode: int, errmsg: str, *, api: str = "") -> None:
        self.errcode = errcode
        self.errmsg = errmsg
        self.api = api
        super().__init__(f"WeCom {api or 'API'} error {errcode}: {errmsg}")


class MediaTooLarge(WeComAPIError):
    """A download larger than MAX_DOWNLOAD_BYTES: sending it again cannot help."""

    def __init__(self, api: str) -> None:
        super().__init__(-1, "media too large", api=api)


# ---------------------------------------------------------------- the client

_TASK_ID_OK = re.compile(r"[^0-9A-Za-z_\-@]")


@dataclass(frozen=True)
class Media:
    data: bytes
    content_type: str | None
    filename: str


class WeComAPI:
    """The calls Persona Studio makes; one instance per app (corp id + agent id + secret)."""

    def __init__(
        self,
        *,
        corp_id: str,
        secret: str,
        agent_id: int,
        session: aiohttp.ClientSession,
        base_url: str = DEFAULT_API_BASE,
        token_store: TokenStore | None = None,
        rate_limiter: RateLimiter | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.corp_id = corp_id
        self._secret = secret
        self.agent_id = agent_id
        self.base_url = base_url.rstrip("/")
        self._session = session
        self.tokens: TokenStore = token_store or MemoryTokenStore()
        self.limiter = rate_limiter or RateLimiter()
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._token_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"WeComAPI(corp_id={self.corp_id!r}, agent_id={self.agent_id!r}, base_url={self.base_url!r})"

    # -- access token

    async def access_token(self, *, stale: str | None = None) -> str:
        """A valid token: the cached one, or a new one. ``stale`` is a token the API just refused."""
        token = await self.tokens.get()
        if token is not None and token != stale:
            return token
        async with self._token_lock:
            token = await self.tokens.get()  # another task (or process) may have refreshed it
            if token is not None and token != stale:
                return token
            body = await self._get_json("gettoken", {"corpid": self.corp_id, "corpsecret": self._secret})
            _raise_for_errcode(body, "gettoken")
            token = body.get("access_token")
            if not isinstance(token, str) or not token:
                raise WeComAPIError(-1, "gettoken answered no access_token", api="gettoken")
            expires_in = float(body.get("expires_in") or 7200)
            await self.tokens.set(token, expires_in)
            log.info("wecom: fetched a new access_token (expires in %ds)", int(expires_in))
            return token

    # -- transport

    async def _get_json(self, api: str, params: Mapping[str, str]) -> dict[str, Any]:
        try:
            async with self._session.get(
                f"{self.base_url}/cgi-bin/{api}", params=params, timeout=self._timeout
            ) as response:
                return await _json_body(response, api)
        except aiohttp.ClientError as exc:
            raise WeComAPIError(-1, f"request failed ({type(exc).__name__})", api=api) from None
        except TimeoutError:
            raise WeComAPIError(-1, "request timed out", api=api) from None

    async def call(
        self,
        method: str,
        api: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        form: Callable[[], aiohttp.FormData] | None = None,
        raw: bool = False,
    ) -> Any:
        """Call ``/cgi-bin/<api>`` with the token; on 40014/42001 refresh it and retry once.

        ``raw`` returns a :class:`Media` for binary answers (media/get).
        """
        stale: str | None = None
        for attempt in range(2):
            token = await self.access_token(stale=stale)
            query = {"access_token": token, **(params or {})}
            try:
                async with self._session.request(
                    method,
                    f"{self.base_url}/cgi-bin/{api}",
                    params=query,
                    json=json_body,
                    data=form() if form is not None else None,
                    timeout=self._timeout,
                ) as response:
                    if raw and not _is_json_response(response):
                        if response.status != 200:
                            raise WeComAPIError(-1, f"HTTP {response.status}", api=api)
                        return await _read_media(response)
                    body = await _json_body(response, api)
            except aiohttp.ClientError as exc:
                raise WeComAPIError(-1, f"request failed ({type(exc).__name__})", api=api) from None
            except TimeoutError:
                raise WeComAPIError(-1, "request timed out", api=api) from None
            errcode = _errcode(body)
            if errcode in TOKEN_ERRCODES and attempt == 0:
                log.info("wecom: %s answered %s; refreshing the access_token", api, errcode)
                stale = token
                continue
            _raise_for_errcode(body, api)
            return body
        raise AssertionError("unreachable")  # pragma: no cover

    # -- messages

    async def _send(self, user: str, payload: dict[str, Any], *, optional: bool = False) -> bool:
        if optional:
            if not self.limiter.try_acquire(user, reserve=5):
                log.info("wecom: skipped an optional message to a user near the send limit")
                return False
        else:
            waited = await self.limiter.acquire(user)
            if waited:
                log.info("wecom: waited %.1fs for the per-user send limit", waited)
        body = {"touser": user, "agentid": self.agent_id, **payload}
        await self.call("POST", "message/send", json_body=body)
        return True

    async def send_text(self, user: str, text: str, *, optional: bool = False) -> int:
        """Send ``text`` in pieces of at most 2048 bytes; returns the number of messages sent."""
        sent = 0
        for piece in text_pieces(text):
            if not piece.strip():
                continue
            if await self._send(user, {"msgtype": "text", "text": {"content": piece}}, optional=optional):
                sent += 1
            elif optional:
                break
        return sent

    async def upload_media(
        self, data: bytes, filename: str, media_type: str = "image", content_type: str | None = None
    ) -> str:
        def form() -> aiohttp.FormData:
            payload = aiohttp.FormData()
            payload.add_field("media", data, filename=filename, content_type=content_type or "application/octet-stream")
            return payload

        body = await self.call("POST", "media/upload", params={"type": media_type}, form=form)
        media_id = body.get("media_id")
        if not isinstance(media_id, str) or not media_id:
            raise WeComAPIError(-1, "media/upload answered no media_id", api="media/upload")
        return media_id

    async def upload_image(self, data: bytes, filename: str = "image.png") -> str:
        content_type = "image/jpeg" if filename.lower().endswith((".jpg", ".jpeg")) else "image/png"
        return await self.upload_media(data, filename, "image", content_type)

    async def send_image(self, user: str, media_id: str) -> None:
        await self._send(user, {"msgtype": "image", "image": {"media_id": media_id}})

    async def send_video(self, user: str, media_id: str, title: str = "", description: str = "") -> None:
        """A video message (media/upload type=video: MP4, at most :data:`VIDEO_LIMIT_BYTES`)."""
        video = {"media_id": media_id, "title": title[:128], "description": description[:512]}
        await self._send(user, {"msgtype": "video", "video": video})

    async def send_file(self, user: str, media_id: str) -> None:
        await self._send(user, {"msgtype": "file", "file": {"media_id": media_id}})

    async def send_card(
        self,
        user: str,
        *,
        turn_id: int,
        title: str,
        desc: str = "",
        buttons: Sequence[str] = ("approve", "regen", "undo"),
    ) -> str:
        """A button_interaction template_card; returns its task_id."""
        task_id = _TASK_ID_OK.sub("-", f"turn-{turn_id}-{uuid.uuid4().hex[:16]}")[:128]
        button_list = [
            {"text": CARD_BUTTONS[name][0], "style": CARD_BUTTONS[name][1], "key": f"{name}:{turn_id}"}
            for name in buttons
            if name in CARD_BUTTONS
        ]
        if not button_list:
            raise ValueError("a card needs at least one of approve, regen, undo, reject")
        main_title: dict[str, str] = {"title": _clip(title, 36)}
        if desc:
            main_title["desc"] = _clip(desc, 44)
        card = {
            "card_type": "button_interaction",
            "main_title": main_title,
            "task_id": task_id,
            "button_list": button_list,
        }
        await self._send(user, {"msgtype": "template_card", "template_card": card})
        return task_id

    async def send_role_card(self, user: str, *, key: str, title: str, desc: str = "") -> str:
        """商品 / 场景 / 人脸 under an image the user sent; each button's key is ``ref:<role>:<key>``."""
        task_id = _TASK_ID_OK.sub("-", f"ref-{key[:16]}-{uuid.uuid4().hex[:16]}")[:128]
        main_title: dict[str, str] = {"title": _clip(title, 36)}
        if desc:
            main_title["desc"] = _clip(desc, 44)
        buttons = [
            {"text": text, "style": style, "key": f"ref:{role}:{key}"} for role, (text, style) in ROLE_BUTTONS.items()
        ]
        card = {"card_type": "button_interaction", "main_title": main_title, "task_id": task_id, "button_list": buttons}
        await self._send(user, {"msgtype": "template_card", "template_card": card})
        return task_id

    async def update_card_clicked(self, user: str, response_code: str, label: str) -> None:
        """After a click: turn the card's buttons into one grey, unclickable ``label``."""
        body = {
            "userids": [user],
            "agentid": self.agent_id,
            "response_code": response_code,
            "button": {"replace_name": _clip(label, 10)},
        }
        await self.call("POST", "message/update_template_card", json_body=body)

    async def download_media(self, media_id: str) -> Media:
        """A user's uploaded image (or other media) by MediaId (media/get)."""
        result = await self.call("GET", "media/get", params={"media_id": media_id}, raw=True)
        if not isinstance(result, Media):
            raise WeComAPIError(-1, "media/get answered JSON without an error", api="media/get")
        return result

    async def download_url(self, url: str) -> Media:
        """Fetch a PicUrl (no token needed)."""
        if not url.startswith(("http://", "https://")):
            raise WeComAPIError(-1, "PicUrl is not http(s)", api="PicUrl")
        try:
            async with self._session.get(url, timeout=self._timeout) as response:
                if response.status != 200:
                    raise WeComAPIError(-1, f"HTTP {response.status}", api="PicUrl")
                return await _read_media(response)
        except aiohttp.ClientError as exc:
            raise WeComAPIError(-1, f"request failed ({type(exc).__name__})", api="PicUrl") from None
        except TimeoutError:
            raise WeComAPIError(-1, "request timed out", api="PicUrl") from None


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _is_json_response(response: aiohttp.ClientResponse) -> bool:
    content_type = response.headers.get("Content-Type", "")
    return "json" in content_type or content_type.startswith("text/plain")


async def _json_body(response: aiohttp.ClientResponse, api: str) -> dict[str, Any]:
    if response.status != 200:
        raise WeComAPIError(-1, f"HTTP {response.status}", api=api)
    try:
        body = json.loads(await response.read())
    except (ValueError, UnicodeDecodeError):
        raise WeComAPIError(-1, "answer is not JSON", api=api) from None
    if not isinstance(body, dict):
        raise WeComAPIError(-1, "answer is not a JSON object", api=api)
    return body


async def _read_media(response: aiohttp.ClientResponse) -> Media:
    if (response.content_length or 0) > MAX_DOWNLOAD_BYTES:
        raise MediaTooLarge("media/get")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(65536):
        size += len(chunk)
        if size > MAX_DOWNLOAD_BYTES:
            raise MediaTooLarge("media/get")
        chunks.append(chunk)
    content_type = response.headers.get("Content-Type", "").split(";")[0].strip() or None
    filename = "image"
    disposition = response.headers.get("Content-Disposition", "")
    match = re.search(r'filename="?([^";]+)"?', disposition)
    if match:
        filename = match.group(1).strip().replace("/", "_").replace("\\", "_") or "image"
    elif content_type in ("image/jpeg", "image/png", "image/gif"):
        filename = "image." + content_type.split("/")[1].replace("jpeg", "jpg")
    return Media(b"".join(chunks), content_type, filename)


def _errcode(body: Mapping[str, Any]) -> int:
    try:
        return int(body.get("errcode", 0) or 0)
    except (TypeError, ValueError):
        return -1


def _raise_for_errcode(body: Mapping[str, Any], api: str) -> None:
    errcode = _errcode(body)
    if errcode != 0:
        raise WeComAPIError(errcode, str(body.get("errmsg", ""))[:200], api=api)
