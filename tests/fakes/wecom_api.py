"""A fake WeCom (企业微信) server API on loopback, speaking the documented wire format.

Endpoints: GET /cgi-bin/gettoken, POST /cgi-bin/media/upload (multipart field "media"),
POST /cgi-bin/message/send (text, image, file, template_card), GET /cgi-bin/media/get,
POST /cgi-bin/message/update_template_card, and GET /pic/<media_id> for PicUrl.

Knobs: ``expire_token()`` (the current token now answers 42001), ``invalidate_token()`` (40014),
``fail_next(api, errcode)`` (the next call of ``api`` answers that code), ``add_media(...)``
(an image a user "sent", to be fetched by MediaId). Records: ``gettoken_calls``, ``sent``
(every accepted message/send body), ``uploads``, ``calls`` (api, errcode) in order.

It checks what the real API checks where tests rely on it: corpid/corpsecret, the token, the
agentid, text content at most 2048 bytes (45002), known media ids (40007), template_card
fields.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

ERRMSG = {
    0: "ok",
    40001: "invalid credential",
    40007: "invalid media_id",
    40013: "invalid corpid",
    40014: "invalid access_token",
    40056: "invalid agentid",
    41001: "access_token missing",
    42001: "access_token expired",
    44004: "empty content",
    45002: "content size out of limit",
    40058: "invalid parameter",
}


@dataclass
class Upload:
    media_id: str
    media_type: str
    filename: str
    data: bytes
    content_type: str


class FakeWeComAPI:
    def __init__(self, corp_id: str, secret: str, agent_id: int, *, expires_in: int = 7200) -> None:
        self.corp_id = corp_id
        self.secret = secret
        self.agent_id = agent_id
        self.expires_in = expires_in
        self.gettoken_calls = 0
        self.sent: list[dict[str, Any]] = []
        self.uploads: dict[str, Upload] = {}
        self.card_updates: list[dict[str, Any]] = []
        self.calls: list[tuple[str, int]] = []
        self._valid: set[str] = set()
        self._expired: set[str] = set()
        self._fail_next: dict[str, list[int]] = defaultdict(list)
        self._counter = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._changed: asyncio.Condition | None = None
        self.base_url = ""

    # -- knobs

    def expire_token(self) -> None:
        """Every token issued so far now answers 42001 (expired)."""
        self._expired |= self._valid
        self._valid.clear()

    def invalidate_token(self) -> None:
        """Every token issued so far now answers 40014 (invalid)."""
        self._valid.clear()

    def fail_next(self, api: str, errcode: int, times: int = 1) -> None:
        self._fail_next[api].extend([errcode] * times)

    def add_media(self, data: bytes, filename: str = "photo.jpg", content_type: str = "image/jpeg") -> str:
        media_id = f"user-media-{next(self._counter)}"
        self.uploads[media_id] = Upload(media_id, "image", filename, data, content_type)
        return media_id

    def pic_url(self, media_id: str) -> str:
        return f"{self.base_url}/pic/{media_id}"

    def messages_to(self, user: str, msgtype: str | None = None) -> list[dict[str, Any]]:
        return [
            m
            for m in self.sent
            if user in m.get("touser", "").split("|") and (msgtype is None or m.get("msgtype") == msgtype)
        ]

    def texts_to(self, user: str) -> list[str]:
        return [m["text"]["content"] for m in self.messages_to(user, "text")]

    async def wait_for(self, predicate: Callable[[FakeWeComAPI], bool], within_s: float = 10.0) -> None:
        """Wait until ``predicate(self)`` holds; re-checked after every accepted message/send."""
        if self._changed is None:
            self._changed = asyncio.Condition()
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: predicate(self)), within_s)

    async def _notify(self) -> None:
        if self._changed is None:
            self._changed = asyncio.Condition()
        async with self._changed:
            self._changed.notify_all()

    # -- server

    def app(self) -> web.Application:
        app = web.Application(client_max_size=30 * 1024 * 1024)
        app.router.add_get("/cgi-bin/gettoken", self._gettoken)
        app.router.add_post("/cgi-bin/media/upload", self._upload)
        app.router.add_get("/cgi-bin/media/get", self._media_get)
        app.router.add_post("/cgi-bin/message/send", self._send)
        app.router.add_post("/cgi-bin/message/update_template_card", self._update_card)
        app.router.add_get("/pic/{media_id}", self._pic)
        return app

    async def start(self) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self.base_url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeWeComAPI:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- helpers

    def _answer(self, api: str, errcode: int, **fields: Any) -> web.Response:
        self.calls.append((api, errcode))
        body = {"errcode": errcode, "errmsg": ERRMSG.get(errcode, "error"), **fields}
        return web.json_response(body)

    def _check_token(self, request: web.Request, api: str) -> int:
        if self._fail_next[api]:
            return self._fail_next[api].pop(0)
        token = request.query.get("access_token", "")
        if not token:
            return 41001
        if token in self._expired:
            return 42001
        if token not in self._valid:
            return 40014
        return 0

    # -- endpoints

    async def _gettoken(self, request: web.Request) -> web.Response:
        self.gettoken_calls += 1
        if self._fail_next["gettoken"]:
            return self._answer("gettoken", self._fail_next["gettoken"].pop(0))
        if request.query.get("corpid") != self.corp_id:
            return self._answer("gettoken", 40013)
        if request.query.get("corpsecret") != self.secret:
            return self._answer("gettoken", 40001)
        token = f"token-{next(self._counter)}"
        self._valid.add(token)
        return self._answer("gettoken", 0, access_token=token, expires_in=self.expires_in)

    async def _upload(self, request: web.Request) -> web.Response:
        errcode = self._check_token(request, "media/upload")
        if errcode:
            return self._answer("media/upload", errcode)
        media_type = request.query.get("type", "")
        if media_type not in ("image", "voice", "video", "file"):
            return self._answer("media/upload", 40004)
        post = await request.post()
        field = post.get("media")
        if not isinstance(field, web.FileField):
            return self._answer("media/upload", 40058)
        data = field.file.read()
        if media_type == "image" and not (data.startswith(b"\x89PNG") or data.startswith(b"\xff\xd8")):
            return self._answer("media/upload", 40005)  # invalid file type
        if len(data) < 5:
            return self._answer("media/upload", 40006)  # invalid file size
        if media_type == "video" and (data[4:8] != b"ftyp" or len(data) > 10 * 1024 * 1024):
            return self._answer("media/upload", 40006 if data[4:8] == b"ftyp" else 40005)  # MP4, at most 10 MB
        media_id = f"media-{next(self._counter)}"
        self.uploads[media_id] = Upload(media_id, media_type, field.filename, data, field.content_type)
        return self._answer("media/upload", 0, type=media_type, media_id=media_id, created_at="1700000000")

    async def _media_get(self, request: web.Request) -> web.StreamResponse:
        errcode = self._check_token(request, "media/get")
        if errcode:
            return self._answer("media/get", errcode)
        upload = self.uploads.get(request.query.get("media_id", ""))
        if upload is None:
            return self._answer("media/get", 40007)
        self.calls.append(("media/get", 0))
        return web.Response(
            body=upload.data,
            headers={
                "Content-Type": upload.content_type,
                "Content-Disposition": f'attachment; filename="{upload.filename}"',
            },
        )

    async def _pic(self, request: web.Request) -> web.Response:
        upload = self.uploads.get(request.match_info["media_id"])
        if upload is None:
            return web.Response(status=404)
        return web.Response(body=upload.data, content_type=upload.content_type)

    async def _send(self, request: web.Request) -> web.Response:
        errcode = self._check_token(request, "message/send")
        if errcode:
            return self._answer("message/send", errcode)
        try:
            body = json.loads(await request.read())
        except ValueError:
            return self._answer("message/send", 40058)
        errcode = self._validate_message(body)
        if errcode:
            return self._answer("message/send", errcode)
        self.sent.append(body)
        await self._notify()
        return self._answer("message/send", 0, invaliduser="", msgid=f"msg-{next(self._counter)}")

    def _validate_message(self, body: dict[str, Any]) -> int:
        if body.get("agentid") != self.agent_id:
            return 40056
        if not body.get("touser"):
            return 40058
        msgtype = body.get("msgtype")
        if msgtype == "text":
            content = body.get("text", {}).get("content", "")
            if not content:
                return 44004
            if len(content.encode("utf-8")) > 2048:
                return 45002
            return 0
        if msgtype in ("image", "file", "video"):
            media_id = body.get(msgtype, {}).get("media_id", "")
            upload = self.uploads.get(media_id)
            return 0 if upload is not None and upload.media_type == msgtype else 40007
        if msgtype == "template_card":
            card = body.get("template_card", {})
            if card.get("card_type") != "button_interaction":
                return 40058
            task_id = card.get("task_id", "")
            if not task_id or len(task_id) > 128 or not re.fullmatch(r"[0-9A-Za-z_\-@]+", task_id):
                return 40058
            if not card.get("main_title", {}).get("title"):
                return 40058
            buttons = card.get("button_list", [])
            keys = [b.get("key") for b in buttons]
            if not 1 <= len(buttons) <= 6 or len(set(keys)) != len(keys) or not all(keys):
                return 40058
            if not all(b.get("text") for b in buttons):
                return 40058
            return 0
        return 40058

    async def _update_card(self, request: web.Request) -> web.Response:
        errcode = self._check_token(request, "message/update_template_card")
        if errcode:
            return self._answer("message/update_template_card", errcode)
        body = json.loads(await request.read())
        self.card_updates.append(body)
        return self._answer("message/update_template_card", 0, invaliduser=[])
