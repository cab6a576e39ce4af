"""A WeCom callback's envelope: the outer XML, its signature and AES envelope, the inner message.

Parsing goes through defusedxml: a document with a DTD or entities is refused outright (no
entity expansion, no external references), and so is anything but one ``<xml>`` root.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET

import defusedxml
import defusedxml.ElementTree as SafeET

from bot.wecom.crypto import DecryptError, InvalidSignatureError, ReceiverMismatchError, WeComCrypto

MAX_BODY_BYTES = 256 * 1024  # real callbacks are a few KiB; anything bigger is refused (413)


class BadCallback(Exception):
    """A callback to refuse: ``status`` is the 4xx to answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def parse_xml(text: str | bytes) -> dict[str, str]:
    """The direct children of a WeCom ``<xml>`` document as tag -> text.

    Documents with a DTD or entities are refused (nothing is expanded); so is anything but one
    ``<xml>`` root.
    """
    raw = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    try:
        root = SafeET.fromstring(raw, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except defusedxml.DefusedXmlException:
        raise BadCallback(400, "XML with a DTD") from None
    except ET.ParseError:
        raise BadCallback(400, "malformed XML") from None
    if root.tag != "xml":
        raise BadCallback(400, "XML root is not <xml>")
    fields: dict[str, str] = {}
    for child in root:
        if len(child) == 0 and child.tag not in fields:
            fields[child.tag] = child.text or ""
    return fields


def open_envelope(
    crypto: WeComCrypto, corp_id: str, body: bytes, msg_signature: str, timestamp: str, nonce: str
) -> dict[str, str]:
    """The decrypted message fields of a POSTed callback, or :class:`BadCallback`."""
    if len(body) > MAX_BODY_BYTES:
        raise BadCallback(413, "body too large")
    outer = parse_xml(body)
    encrypted = outer.get("Encrypt", "").strip()
    if not encrypted:
        raise BadCallback(400, "no Encrypt element")
    to_user = outer.get("ToUserName", "").strip()
    if to_user and to_user != corp_id:
        raise BadCallback(403, "wrong corp id")
    try:
        plain = crypto.decrypt_message(msg_signature, timestamp, nonce, encrypted)
    except InvalidSignatureError:
        raise BadCallback(403, "bad signature") from None
    except ReceiverMismatchError:
        raise BadCallback(403, "wrong corp id") from None
    except DecryptError:
        raise BadCallback(400, "undecryptable message") from None
    message = parse_xml(plain)
    inner_to = message.get("ToUserName", "").strip()
    if inner_to and inner_to != corp_id:
        raise BadCallback(403, "wrong corp id")
    if not message.get("FromUserName", "").strip() or not message.get("MsgType", "").strip():
        raise BadCallback(400, "message without FromUserName or MsgType")
    message["FromUserName"] = message["FromUserName"].strip()
    message["MsgType"] = message["MsgType"].strip()
    return message


def check_timestamp(timestamp: str, now: float, window_s: float) -> None:
    """Refuse a callback whose signed timestamp is more than ``window_s`` from ``now``: a captured
    callback cannot be replayed later (the inbox keeps keys for longer than the window)."""
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        raise BadCallback(400, "bad timestamp")
    if abs(now - int(timestamp)) > window_s:
        raise BadCallback(403, "timestamp outside the replay window")


def check_agent(message: dict[str, str], agent_id: int) -> None:
    """Refuse a message for another app of the corp (a correct signature is not enough)."""
    agent = message.get("AgentID", "").strip()
    if agent != str(agent_id):
        raise BadCallback(403, "wrong AgentID")


def dedupe_key(message: dict[str, str]) -> str:
    """MsgId for messages; for events FromUserName + CreateTime (WeCom's documented key) plus the
    event, its EventKey and TaskId: two clicks of one user in the same second are two events."""
    msg_id = message.get("MsgId", "").strip()
    if msg_id:
        return f"msg:{msg_id}"[:255]
    create_time = message.get("CreateTime", "").strip()
    if create_time:
        parts = [message["FromUserName"], create_time]
        parts += [message.get(name, "").strip() for name in ("Event", "EventKey", "TaskId")]
        key = "evt:" + ":".join(parts)
        if len(key) <= 255:
            return key
    digest = hashlib.sha256(repr(sorted(message.items())).encode("utf-8")).hexdigest()
    return f"raw:{digest}"
