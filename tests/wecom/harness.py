"""Test harness for the WeCom front end: WeCom-encrypted callbacks, a fake API, a stand-in.

- :class:`WeComSender` encrypts and signs callbacks exactly as WeCom does, using wechatpy's
  WeCom crypto (``wechatpy.enterprise.crypto.WeChatCrypto``) as an implementation independent
  of ``bot.wecom.crypto``, and wraps them in WeCom's POST body
  (``<xml><ToUserName/><Encrypt/><AgentID/></xml>`` + msg_signature/timestamp/nonce).
- ``text_xml`` / ``image_xml`` / ``card_click_xml`` build the decrypted message XML.
- :class:`StandInConversation` is a STAND-IN for ``commands.conversation.Conversation``: it
  records events and answers scripted actions. Tests of the whole conversation pass the real
  Conversation to :class:`WeComHarness` instead.
- :class:`WeComHarness` starts the fake WeCom API and the callback app on loopback around any
  conversation object.
"""

from __future__ import annotations

import base64
import itertools
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import xmltodict
from aiohttp.test_utils import TestClient, TestServer
from wechatpy.enterprise.crypto import WeChatCrypto

from bot.wecom import CALLBACK_PATH, WECOM_BOT, WeComBot, WeComConfig, create_wecom_app
from commands.events import Action, Event
from storage.db import Database
from storage.inbox import Inbox
from storage.settings import Settings, load_settings
from tests.fakes.wecom_api import FakeWeComAPI

CORP_ID = "ww0123456789abcdef"
AGENT_ID = 1000002
SECRET = "corp-secret-DO-NOT-LOG-7f3a9c"
TOKEN = "CallbackTok3n"
AES_KEY = base64.b64encode(bytes(range(7, 39))).decode().rstrip("=")
assert len(AES_KEY) == 43

_ids = itertools.count(7_000_000_000_000_000_001)
_nonces = itertools.count(100_000)


def next_msg_id() -> str:
    return str(next(_ids))


def _cdata(value: str) -> str:
    return "<![CDATA[" + value.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def text_xml(
    user: str,
    content: str,
    *,
    msg_id: str | None = None,
    create_time: int | None = None,
    corp_id: str = CORP_ID,
    agent_id: int = AGENT_ID,
) -> str:
    return (
        f"<xml><ToUserName>{_cdata(corp_id)}</ToUserName><FromUserName>{_cdata(user)}</FromUserName>"
        f"<CreateTime>{create_time or int(time.time())}</CreateTime><MsgType>{_cdata('text')}</MsgType>"
        f"<Content>{_cdata(content)}</Content><MsgId>{msg_id or next_msg_id()}</MsgId>"
        f"<AgentID>{agent_id}</AgentID></xml>"
    )


def image_xml(
    user: str,
    *,
    media_id: str,
    pic_url: str = "",
    msg_id: str | None = None,
    create_time: int | None = None,
    corp_id: str = CORP_ID,
    agent_id: int = AGENT_ID,
) -> str:
    return (
        f"<xml><ToUserName>{_cdata(corp_id)}</ToUserName><FromUserName>{_cdata(user)}</FromUserName>"
        f"<CreateTime>{create_time or int(time.time())}</CreateTime><MsgType>{_cdata('image')}</MsgType>"
        f"<PicUrl>{_cdata(pic_url)}</PicUrl><MediaId>{_cdata(media_id)}</MediaId>"
        f"<MsgId>{msg_id or next_msg_id()}</MsgId><AgentID>{agent_id}</AgentID></xml>"
    )


def card_click_xml(
    user: str,
    *,
    event_key: str,
    task_id: str = "turn-1-abc",
    response_code: str = "rc-1",
    create_time: int | None = None,
    corp_id: str = CORP_ID,
    agent_id: int = AGENT_ID,
) -> str:
    return (
        f"<xml><ToUserName>{_cdata(corp_id)}</ToUserName><FromUserName>{_cdata(user)}</FromUserName>"
        f"<CreateTime>{create_time or int(time.time())}</CreateTime><MsgType>{_cdata('event')}</MsgType>"
        f"<Event>{_cdata('template_card_event')}</Event><EventKey>{_cdata(event_key)}</EventKey>"
        f"<TaskId>{_cdata(task_id)}</TaskId><CardType>{_cdata('button_interaction')}</CardType>"
        f"<ResponseCode>{_cdata(response_code)}</ResponseCode><AgentID>{agent_id}</AgentID>"
        f"<SelectedItems></SelectedItems></xml>"
    )


class WeComSender:
    """Encrypts and signs like WeCom's servers, with wechatpy (independent of bot.wecom.crypto)."""

    def __init__(
        self, token: str = TOKEN, aes_key: str = AES_KEY, corp_id: str = CORP_ID, agent_id: int = AGENT_ID
    ) -> None:
        self.crypto = WeChatCrypto(token, aes_key, corp_id)
        self.corp_id = corp_id
        self.agent_id = agent_id

    def seal(self, plaintext: str, *, timestamp: str | None = None) -> dict[str, str]:
        """Encrypt + sign: {Encrypt, msg_signature, timestamp, nonce}."""
        nonce = str(next(_nonces))
        out = xmltodict.parse(self.crypto.encrypt_message(plaintext, nonce, timestamp or str(int(time.time()))))
        fields = out["xml"]
        return {
            "Encrypt": fields["Encrypt"],
            "msg_signature": fields["MsgSignature"],
            "timestamp": str(fields["TimeStamp"]),
            "nonce": fields["Nonce"],
        }

    def envelope(
        self, message_xml: str, *, to_user: str | None = None, timestamp: str | None = None
    ) -> tuple[dict[str, str], bytes]:
        """(query params, POST body) of a callback carrying ``message_xml``, signed at ``timestamp``."""
        sealed = self.seal(message_xml, timestamp=timestamp)
        body = (
            f"<xml><ToUserName>{_cdata(to_user or self.corp_id)}</ToUserName>"
            f"<Encrypt>{_cdata(sealed['Encrypt'])}</Encrypt>"
            f"<AgentID>{_cdata(str(self.agent_id))}</AgentID></xml>"
        )
        params = {k: sealed[k] for k in ("msg_signature", "timestamp", "nonce")}
        return params, body.encode("utf-8")

    def echo(self, plaintext: str) -> dict[str, str]:
        """Query params of a URL verification GET whose echostr decrypts to ``plaintext``."""
        sealed = self.seal(plaintext)
        return {
            "msg_signature": sealed["msg_signature"],
            "timestamp": sealed["timestamp"],
            "nonce": sealed["nonce"],
            "echostr": sealed["Encrypt"],
        }


Script = Callable[[Event], Sequence[Action] | Awaitable[Sequence[Action]]]


class StandInConversation:
    """STAND-IN for commands.conversation.Conversation: records events, answers scripted actions."""

    def __init__(self, script: Script | None = None) -> None:
        self.script = script
        self.events: list[Event] = []
        self.deliverers: dict[str, Callable[[Sequence[Action]], Awaitable[None]]] = {}
        self.pending_calls: list[str] = []

    async def handle(self, event: Event) -> list[Action]:
        self.events.append(event)
        if self.script is None:
            return []
        result = self.script(event)
        if not isinstance(result, Sequence):
            result = await result
        return list(result)

    async def bind_thread(self, thread_db_id: int, *, channel_id: int | None, thread_id: int | None) -> None:
        return None

    def add_deliverer(self, platform: str, deliver: Callable[[Sequence[Action]], Awaitable[None]]) -> None:
        self.deliverers[platform] = deliver

    async def deliver_pending(self, platform: str) -> int:
        self.pending_calls.append(platform)
        return 0


def wecom_settings(api_base: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "wecom_corp_id": CORP_ID,
        "wecom_agent_id": AGENT_ID,
        "wecom_secret": SECRET,
        "wecom_token": TOKEN,
        "wecom_aes_key": AES_KEY,
        "wecom_api_base": api_base,
        "wecom_host": "127.0.0.1",
    }
    values.update(overrides)
    return load_settings(**values)


class WeComHarness:
    """The fake WeCom API + the callback app (on loopback) around ``conversation``.

    ``async with WeComHarness(conv) as h: await h.say("alice", "/help"); await h.settle()``
    """

    def __init__(
        self,
        conversation: Any,
        *,
        fake: FakeWeComAPI | None = None,
        settings_overrides: dict[str, Any] | None = None,
        **bot_options: Any,
    ) -> None:
        self.conversation = conversation
        self.fake = fake or FakeWeComAPI(CORP_ID, SECRET, AGENT_ID)
        self._own_fake = fake is None
        self.settings_overrides = settings_overrides or {}
        self.bot_options = bot_options
        self.sender = WeComSender()
        self.client: TestClient[Any, Any] | None = None
        self._db: Database | None = None

    async def __aenter__(self) -> WeComHarness:
        if self._own_fake:
            await self.fake.start()
        self.settings = wecom_settings(self.fake.base_url, **self.settings_overrides)
        if "inbox" not in self.bot_options and hasattr(self.conversation, "store"):
            self.bot_options["inbox"] = Inbox(self.conversation.store.db)
        elif "inbox" not in self.bot_options:
            # a stand-in conversation has no storage: the inbox gets a SQLite file of its own
            self._folder = tempfile.TemporaryDirectory(prefix="wecom-inbox-")
            self._db = Database(f"sqlite+aiosqlite:///{self._folder.name}/inbox.db")
            await self._db.upgrade()
            self.bot_options["inbox"] = Inbox(self._db)
        self.app = create_wecom_app(WeComConfig.from_settings(self.settings), self.conversation, **self.bot_options)
        self.client = TestClient(TestServer(self.app, host="127.0.0.1"))
        await self.client.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.client is not None:
            await self.client.close()
        if self._own_fake:
            await self.fake.close()
        if self._db is not None:
            await self._db.dispose()
            self._folder.cleanup()

    @property
    def bot(self) -> WeComBot:
        return self.app[WECOM_BOT]

    async def post_raw(self, params: dict[str, str], body: bytes) -> tuple[int, bytes]:
        assert self.client is not None
        async with self.client.post(
            CALLBACK_PATH, params=params, data=body, headers={"Content-Type": "text/xml"}
        ) as response:
            return response.status, await response.read()

    async def post(self, message_xml: str, *, sender: WeComSender | None = None) -> tuple[int, bytes]:
        params, body = (sender or self.sender).envelope(message_xml)
        return await self.post_raw(params, body)

    async def say(self, user: str, text: str, **kwargs: Any) -> tuple[int, bytes]:
        return await self.post(text_xml(user, text, **kwargs))

    async def get(self, params: dict[str, str]) -> aiohttp.ClientResponse:
        assert self.client is not None
        response = await self.client.get(CALLBACK_PATH, params=params)
        await response.read()
        return response

    async def settle(self) -> None:
        """Wait until every callback so far has been handled and its answer sent."""
        await self.bot.drain()


__all__ = [
    "AES_KEY",
    "AGENT_ID",
    "CORP_ID",
    "SECRET",
    "TOKEN",
    "StandInConversation",
    "WeComHarness",
    "WeComSender",
    "card_click_xml",
    "image_xml",
    "next_msg_id",
    "text_xml",
    "wecom_settings",
]
