"""WeCom messages in the commands layer's terms: a decrypted callback becomes one :class:`Event`.

Text is parsed with the shared text grammar (``/post ...``, ``通过``); an image is downloaded at
once (MediaId, else PicUrl) and travels as the event's attachment; a click on a result card
(template_card_event, key ``<button>:<turn id>``) becomes a REACTION, a click on an image's role
card (key ``ref:<role>:<blob key>``) the ``reference`` command. WeCom has no threads:
events carry ``thread_id=None`` and the commands layer keeps each user's current post.
"""

from __future__ import annotations

import logging
import re

from bot.wecom.api import MAX_DOWNLOAD_BYTES, MediaTooLarge, WeComAPI, WeComAPIError
from commands.events import Attachment, Button, Event, EventKind
from commands.ids import parse_id
from commands.parser import parse_text

log = logging.getLogger(__name__)

PLATFORM = "wecom"
TEXT_IMAGE_FAILED = "图片下载失败，请重新发送。\nCould not fetch the image; please send it again."
TEXT_IMAGE_TOO_LARGE = (
    f"图片太大（超过 {MAX_DOWNLOAD_BYTES // (1024 * 1024)} MB），请发送更小的图片。\n"
    f"The image is larger than {MAX_DOWNLOAD_BYTES // (1024 * 1024)} MB; send a smaller one."
)
TEXT_IMAGE_EMPTY = "图片是空的（0 字节），请换一张图片。\nThe image is empty (0 bytes); send another one."
TEXT_NO_RESULT = "这个结果已不存在。\nThat result no longer exists."
TEXT_UNSUPPORTED = "目前只支持文字和图片消息。\nOnly text and image messages are supported."
REACTION_COMMANDS = frozenset(button.value for button in Button) | {"reject"}  # 退回 on a review card


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value.strip()) if value is not None else None
    except ValueError:
        return None


_ROLE_KEY = re.compile(r"ref:(?P<role>product|scene|face):(?P<key>[0-9a-f]{64})")


def role_from_key(event_key: str) -> tuple[str, str] | None:
    """``ref:product:<blob key>`` -> ("product", "<blob key>"); None for other keys."""
    match = _ROLE_KEY.fullmatch(event_key.strip())
    return (match["role"], match["key"]) if match else None


def reaction_from_key(event_key: str) -> tuple[str, int | None] | None:
    """``approve:12`` -> ("approve", 12); ``approve`` -> ("approve", None); None for keys that are
    not ours. A turn part that is no id (``approve:99999999999999999999999``) raises ValueError."""
    name, _, turn = event_key.strip().partition(":")
    if name not in REACTION_COMMANDS:
        return None
    if not turn:
        return name, None
    turn_id = parse_id(turn)
    if turn_id is None:
        raise ValueError("no such turn id")
    return name, turn_id


async def to_event(api: WeComAPI, message: dict[str, str]) -> Event | None:
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
            return Event(platform=PLATFORM, user_id=user, kind=EventKind.MESSAGE, text=parsed.args, channel_id=agent)
        return Event(
            platform=PLATFORM,
            user_id=user,
            kind=parsed.kind,
            command=parsed.command,
            args=parsed.args,
            channel_id=agent,
        )
    if msg_type == "image":
        attachment, problem = await _download_image(api, message)
        if attachment is None:
            await api.send_text(user, problem)
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
        role = role_from_key(message.get("EventKey", ""))
        if role is not None:  # 商品 / 场景 / 人脸 under an image: the ``reference`` command
            return Event(
                platform=PLATFORM,
                user_id=user,
                kind=EventKind.COMMAND,
                command="reference",
                options={"role": role[0], "key": role[1]},
                channel_id=agent,
            )
        try:
            reaction = reaction_from_key(message.get("EventKey", ""))
        except ValueError:
            await api.send_text(user, TEXT_NO_RESULT)
            return None
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
    await api.send_text(user, TEXT_UNSUPPORTED)
    return None


async def _download_image(api: WeComAPI, message: dict[str, str]) -> tuple[Attachment | None, str]:
    """The image (MediaId, else PicUrl), or None and what to tell the user: too large and empty
    images are named as such (sending them again cannot help); a failed fetch asks for a resend."""
    media_id = message.get("MediaId", "").strip()
    pic_url = message.get("PicUrl", "").strip()
    media = None
    too_large = False
    if media_id:
        try:
            media = await api.download_media(media_id)
        except MediaTooLarge:
            too_large = True
        except WeComAPIError as exc:
            log.warning("wecom: media/get failed (%s); trying PicUrl", exc.errcode)
    if media is None and pic_url and not too_large:
        try:
            media = await api.download_url(pic_url)
        except MediaTooLarge:
            too_large = True
        except WeComAPIError as exc:
            log.warning("wecom: fetching PicUrl failed (%s)", exc.errmsg)
    if too_large:
        return None, TEXT_IMAGE_TOO_LARGE
    if media is None:
        return None, TEXT_IMAGE_FAILED
    if not media.data:
        return None, TEXT_IMAGE_EMPTY
    return Attachment(filename=media.filename, data=media.data, content_type=media.content_type), ""
