"""bot.wecom.crypto against WeCom's published sample vectors and wechatpy's implementation."""

from __future__ import annotations

import base64
import struct

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from wechatpy.crypto import _get_signature
from wechatpy.enterprise.crypto import PrpCrypto, WeChatCrypto
from wechatpy.exceptions import InvalidSignatureException

from bot.wecom.crypto import (
    DecryptError,
    InvalidSignatureError,
    ReceiverMismatchError,
    WeComCrypto,
    signature,
)
from tests.wecom.harness import AES_KEY, CORP_ID, TOKEN

# The sample of WeCom's official WXBizMsgCrypt libraries (token, corp id, EncodingAESKey).
SAMPLE_TOKEN = "QDG6eK"
SAMPLE_CORP = "wx5823bf96d3bd56c7"
SAMPLE_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
SAMPLE_ECHO = "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ=="
SAMPLE_ENCRYPT = (
    "RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3QczcdCUpj911L3vg3W/s"
    "YYvuJTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLjvd4Xgpue06DOdnLxAUHzM6+kDZ+HMZfJ"
    "YuR+LtwGc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMnvw2r+KqCKIw+3IQH03v+BCA9nMELNqbSf6tiWSrXJB3LAVGU"
    "callcrw8V2t9EL4EhzJWrQUax5wLVMNS0+rUPA3k22Ncx4XXZS9o0MBH27Bo6BpNelZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDY"
    "A5Pl/T8Z1ptDAVe0lXdQ2YoyyH2uyPIGHBZZIs2pDBS8R07+qN+E7Q=="
)


def test_official_sample_url_verification_and_message() -> None:
    crypto = WeComCrypto(SAMPLE_TOKEN, SAMPLE_KEY, SAMPLE_CORP)
    echo = crypto.verify_url("5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3", "1409659589", "263014780", SAMPLE_ECHO)
    assert echo == "1616140317555161061"
    xml = crypto.decrypt_message("477715d11cdb4164915debcba66cb864d751f3e6", "1409659813", "1372623149", SAMPLE_ENCRYPT)
    assert "<FromUserName><![CDATA[mycreate]]></FromUserName>" in xml
    assert "<MsgId>4561255354251345929</MsgId>" in xml
    assert xml.endswith("</xml>")


def test_signature_matches_wechatpy() -> None:
    for args in [(TOKEN, "1700000000", "123", "abc+/="), ("b", "a", "d", "c"), (TOKEN, "1", "1", "")]:
        assert signature(*args) == _get_signature(*args)


@pytest.mark.parametrize("message", ["", "x", "你好，世界" * 50, "<xml>" + "a" * 1000 + "</xml>"])
def test_our_ciphertext_decrypts_with_wechatpy(message: str) -> None:
    ours = WeComCrypto(TOKEN, AES_KEY, CORP_ID)
    encrypted = ours.encrypt(message)
    assert len(base64.b64decode(encrypted)) % 32 == 0  # padded to 32-byte blocks
    theirs = PrpCrypto(base64.b64decode(AES_KEY + "="))
    assert theirs.decrypt(encrypted, CORP_ID) == message
    # and the signature we put on it passes wechatpy's check
    sig = ours.sign("1700000000", "42", encrypted)
    if message:
        plain = WeChatCrypto(TOKEN, AES_KEY, CORP_ID).check_signature(sig, "1700000000", "42", encrypted)
        assert plain == message


def test_wechatpy_ciphertext_decrypts_with_ours() -> None:
    theirs = WeChatCrypto(TOKEN, AES_KEY, CORP_ID)
    import xmltodict

    sealed = xmltodict.parse(theirs.encrypt_message("<xml><Content>早上好</Content></xml>", "9876", "1700000001"))
    fields = sealed["xml"]
    ours = WeComCrypto(TOKEN, AES_KEY, CORP_ID)
    plain = ours.decrypt_message(fields["MsgSignature"], "1700000001", "9876", fields["Encrypt"])
    assert plain == "<xml><Content>早上好</Content></xml>"
    with pytest.raises(InvalidSignatureException):  # sanity: wechatpy also refuses a forged one
        theirs.check_signature("0" * 40, "1700000001", "9876", fields["Encrypt"])


def test_forged_signature_is_refused() -> None:
    ours = WeComCrypto(TOKEN, AES_KEY, CORP_ID)
    encrypted = ours.encrypt("<xml/>")
    good = ours.sign("1", "2", encrypted)
    with pytest.raises(InvalidSignatureError):
        ours.decrypt_message(good, "1", "3", encrypted)  # another nonce
    with pytest.raises(InvalidSignatureError):
        ours.decrypt_message("", "1", "2", encrypted)
    forged = WeComCrypto("another-token", AES_KEY, CORP_ID).sign("1", "2", encrypted)
    with pytest.raises(InvalidSignatureError):
        ours.decrypt_message(forged, "1", "2", encrypted)
    assert ours.decrypt_message(good, "1", "2", encrypted) == "<xml/>"


def test_wrong_corp_id_is_refused() -> None:
    other = WeChatCrypto(TOKEN, AES_KEY, "ww-someone-else")
    import xmltodict

    fields = xmltodict.parse(other.encrypt_message("<xml/>", "1", "2"))["xml"]
    with pytest.raises(ReceiverMismatchError):
        WeComCrypto(TOKEN, AES_KEY, CORP_ID).decrypt_message(fields["MsgSignature"], "2", "1", fields["Encrypt"])


def _raw_encrypt(plain: bytes) -> str:
    key = base64.b64decode(AES_KEY + "=")
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode()


@pytest.mark.parametrize("last", [0, 33, 200])
def test_bad_padding_is_refused(last: int) -> None:
    body = b"\x00" * 16 + struct.pack(">I", 3) + b"abc" + CORP_ID.encode()
    plain = body + b"\x05" * (63 - len(body)) + bytes([last])
    with pytest.raises(DecryptError):
        WeComCrypto(TOKEN, AES_KEY, CORP_ID).decrypt(_raw_encrypt(plain))


def test_inconsistent_padding_and_length_are_refused() -> None:
    crypto = WeComCrypto(TOKEN, AES_KEY, CORP_ID)
    body = b"\x00" * 16 + struct.pack(">I", 3) + b"abc" + CORP_ID.encode()
    pad = 64 - len(body)
    with pytest.raises(DecryptError):  # pad bytes not all equal
        crypto.decrypt(_raw_encrypt(body + b"\x01" + bytes([pad]) * (pad - 1)))
    lying = b"\x00" * 16 + struct.pack(">I", 5000) + b"abc" + CORP_ID.encode()
    with pytest.raises(DecryptError):  # length field beyond the data
        crypto.decrypt(_raw_encrypt(lying + bytes([64 - len(lying)]) * (64 - len(lying))))


@pytest.mark.parametrize("text", ["not base64!!", base64.b64encode(b"x" * 20).decode(), ""])
def test_garbage_ciphertext_is_refused(text: str) -> None:
    with pytest.raises(DecryptError):
        WeComCrypto(TOKEN, AES_KEY, CORP_ID).decrypt(text)


def test_bad_key_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValueError) as info:
        WeComCrypto(TOKEN, "short-key", CORP_ID)
    assert "short-key" not in str(info.value)
    assert TOKEN not in repr(WeComCrypto(TOKEN, AES_KEY, CORP_ID))
