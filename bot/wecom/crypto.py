"""WeCom (企业微信) callback crypto: the message signature and the AES envelope.

WeCom's documented scheme (加解密方案说明), built on the ``cryptography`` package's AES:

- key = base64decode(EncodingAESKey + "="), 32 bytes; AES-256-CBC with iv = key[:16];
- plaintext = 16 random bytes + 4-byte big-endian length of msg + msg + receiveid (the corp id),
  PKCS#7-padded to a multiple of 32 bytes; the ciphertext travels base64-encoded;
- msg_signature = sha1 of the sorted concatenation of token, timestamp, nonce and the encrypted text.

Every failure raises a subclass of :class:`WeComCryptoError`; messages never contain the token,
the key or the plaintext.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

BLOCK_SIZE = 32  # WeCom pads to 32-byte blocks (not AES's 16)
RANDOM_PREFIX = 16


class WeComCryptoError(Exception):
    """A callback failed verification or decryption; nothing of it may be processed."""


class InvalidSignatureError(WeComCryptoError):
    """msg_signature does not match token, timestamp, nonce and the encrypted text."""


class DecryptError(WeComCryptoError):
    """The encrypted text is not valid base64, AES blocks, padding or framing."""


class ReceiverMismatchError(WeComCryptoError):
    """The decrypted message names another receiver (corp id) than ours."""


def signature(token: str, timestamp: str, nonce: str, encrypted: str) -> str:
    """WeCom's msg_signature: sha1 over the sorted concatenation of the four strings."""
    parts = sorted([token, timestamp, nonce, encrypted])
    return hashlib.sha1("".join(parts).encode("utf-8")).hexdigest()


def pkcs7_pad(data: bytes, block_size: int = BLOCK_SIZE) -> bytes:
    amount = block_size - len(data) % block_size  # 1..block_size, a full block when aligned
    return data + bytes([amount]) * amount


def pkcs7_unpad(data: bytes, block_size: int = BLOCK_SIZE) -> bytes:
    if not data or len(data) % 16:
        raise DecryptError("decrypted data is not a whole number of AES blocks")
    amount = data[-1]
    if amount < 1 or amount > block_size or amount > len(data):
        raise DecryptError("bad padding")
    if data[-amount:] != bytes([amount]) * amount:
        raise DecryptError("bad padding")
    return data[:-amount]


def decode_aes_key(encoding_aes_key: str) -> bytes:
    if len(encoding_aes_key) != 43:
        raise ValueError("EncodingAESKey must be 43 characters")
    try:
        key = base64.b64decode(encoding_aes_key + "=", validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("EncodingAESKey is not valid base64") from None
    if len(key) != 32:
        raise ValueError("EncodingAESKey must decode to 32 bytes")
    return key


class WeComCrypto:
    """Verify, decrypt and (for tests and passive replies) encrypt WeCom callback messages."""

    def __init__(self, token: str, encoding_aes_key: str, receive_id: str) -> None:
        if not token:
            raise ValueError("token is empty")
        if not receive_id:
            raise ValueError("receive id (corp id) is empty")
        self._token = token
        self._key = decode_aes_key(encoding_aes_key)
        self.receive_id = receive_id

    def __repr__(self) -> str:  # never show the token or the key
        return f"WeComCrypto(receive_id={self.receive_id!r})"

    def _cipher(self) -> Cipher[modes.CBC]:
        return Cipher(algorithms.AES(self._key), modes.CBC(self._key[:16]))

    def sign(self, timestamp: str, nonce: str, encrypted: str) -> str:
        return signature(self._token, timestamp, nonce, encrypted)

    def verify_signature(self, msg_signature: str, timestamp: str, nonce: str, encrypted: str) -> None:
        if not msg_signature or not timestamp or not nonce or not encrypted:
            raise InvalidSignatureError("missing msg_signature, timestamp, nonce or encrypted text")
        expected = self.sign(timestamp, nonce, encrypted)
        if not hmac.compare_digest(expected.encode(), msg_signature.lower().encode("utf-8", "replace")):
            raise InvalidSignatureError("msg_signature does not match")

    def encrypt(self, message: str | bytes, *, random_prefix: bytes | None = None) -> str:
        """The base64 ``Encrypt`` text of ``message`` for our receive id."""
        body = message.encode("utf-8") if isinstance(message, str) else message
        prefix = random_prefix if random_prefix is not None else os.urandom(RANDOM_PREFIX)
        if len(prefix) != RANDOM_PREFIX:
            raise ValueError("random prefix must be 16 bytes")
        plain = prefix + struct.pack(">I", len(body)) + body + self.receive_id.encode("utf-8")
        encryptor = self._cipher().encryptor()
        ciphertext = encryptor.update(pkcs7_pad(plain)) + encryptor.finalize()
        return base64.b64encode(ciphertext).decode("ascii")

    def decrypt(self, encrypted: str) -> bytes:
        """Decrypt an ``Encrypt`` text; check padding, framing and the receive id."""
        try:
            ciphertext = base64.b64decode(encrypted, validate=True)
        except (binascii.Error, ValueError):
            raise DecryptError("encrypted text is not valid base64") from None
        if not ciphertext or len(ciphertext) % 16:
            raise DecryptError("encrypted text is not a whole number of AES blocks")
        decryptor = self._cipher().decryptor()
        plain = pkcs7_unpad(decryptor.update(ciphertext) + decryptor.finalize())
        if len(plain) < RANDOM_PREFIX + 4:
            raise DecryptError("decrypted data too short")
        (length,) = struct.unpack(">I", plain[RANDOM_PREFIX : RANDOM_PREFIX + 4])
        start = RANDOM_PREFIX + 4
        if start + length > len(plain):
            raise DecryptError("message length exceeds the decrypted data")
        message = plain[start : start + length]
        receiver = plain[start + length :]
        if not hmac.compare_digest(receiver, self.receive_id.encode("utf-8")):
            raise ReceiverMismatchError("message is addressed to another corp id")
        return message

    def verify_url(self, msg_signature: str, timestamp: str, nonce: str, echostr: str) -> str:
        """URL verification (GET): check the signature over echostr and return its plaintext."""
        self.verify_signature(msg_signature, timestamp, nonce, echostr)
        try:
            return self.decrypt(echostr).decode("utf-8")
        except UnicodeDecodeError:
            raise DecryptError("echostr plaintext is not UTF-8") from None

    def decrypt_message(self, msg_signature: str, timestamp: str, nonce: str, encrypted: str) -> str:
        """A POSTed callback's ``Encrypt`` text, verified and decrypted to its XML."""
        self.verify_signature(msg_signature, timestamp, nonce, encrypted)
        try:
            return self.decrypt(encrypted).decode("utf-8")
        except UnicodeDecodeError:
            raise DecryptError("message plaintext is not UTF-8") from None
