"""What a failed job tells its user: a short message per kind of failure and an error id.

The exception's own text can hold internal details (an S3 endpoint, a bucket, a key, a path):
it goes to the log and to the job's ``error`` column (the admin view) under an error id, and the
user gets :attr:`Failure.message` with that id. ``retryable`` says whether 🔁 with a new seed can
help (not for a photo without a face, nor for a training none of whose candidates matched the
persona's face: a training's seed is its persona's, so the same settings draw the same candidates).
User errors (:data:`USER_ERRORS`) are not the program's errors: their text is the user's message,
they are logged without a traceback and not retried by the queue.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass
from typing import Any

from engine.errors import NoTrainingCandidates, PhotoHasNoFace

STORAGE = "storage_unavailable"
NO_FACE = "no_face"
NO_TRAINING_CANDIDATES = "no_training_candidates"
OUT_OF_MEMORY = "out_of_memory"
TIMED_OUT = "timed_out"
INTERNAL = "internal"

MESSAGES = {
    STORAGE: "the image storage is unavailable right now; please try again in a few minutes",
    OUT_OF_MEMORY: "the GPU ran out of memory; try fewer images or a smaller size",
    TIMED_OUT: "it timed out and was stopped",
    INTERNAL: "something went wrong on our side",
}

#: each kind's message in Chinese, for front ends that speak both languages (WeCom shows it
#: first); a user error's own text carries details in English, its kind's line stands for it
MESSAGES_ZH = {
    STORAGE: "图片存储暂时不可用，请几分钟后再试",
    OUT_OF_MEMORY: "GPU 显存不足，请减少图片数量或调小尺寸",
    TIMED_OUT: "超时，已停止",
    INTERNAL: "我们这边出了问题",
    NO_FACE: "照片里没有找到人脸，请换一张清晰的正脸照片",
    NO_TRAINING_CANDIDATES: (
        "为训练生成的图片都与人设的脸不符，没有可训练的图片；同样的设置会生成同样的图片，"
        "请用更大的 images 重新训练（已达上限则请继续使用现在的人设）"
    ),
}


@dataclass(frozen=True)
class Failure:
    kind: str
    message: str  # for the user: no internal detail
    error_id: str  # names the log line and the admin view's entry
    retryable: bool

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def user_text(self) -> str:
        return f"{self.message} (error id {self.error_id})"


def new_error_id() -> str:
    return secrets.token_hex(4)


#: the user's errors, each with its kind; ``str(exc)`` is the user's message
USER_ERRORS: dict[type[Exception], str] = {PhotoHasNoFace: NO_FACE, NoTrainingCandidates: NO_TRAINING_CANDIDATES}


def is_user_error(exc: BaseException) -> bool:
    return isinstance(exc, tuple(USER_ERRORS))


def classify(exc: BaseException, *, error_id: str | None = None) -> Failure:
    """The failure an exception stands for (its chain is looked through for the cause)."""
    error_id = error_id or new_error_id()
    for cause in _chain(exc):
        for error, kind in USER_ERRORS.items():
            if isinstance(cause, error):
                return Failure(kind, str(cause), error_id, retryable=False)
        if _is_storage(cause):
            return Failure(STORAGE, MESSAGES[STORAGE], error_id, retryable=True)
        if _is_out_of_memory(cause):
            return Failure(OUT_OF_MEMORY, MESSAGES[OUT_OF_MEMORY], error_id, retryable=True)
        if isinstance(cause, TimeoutError):
            return Failure(TIMED_OUT, MESSAGES[TIMED_OUT], error_id, retryable=True)
    return Failure(INTERNAL, MESSAGES[INTERNAL], error_id, retryable=True)


def timed_out(seconds: int) -> Failure:
    return Failure(TIMED_OUT, f"it timed out after {seconds} s and was stopped", new_error_id(), retryable=True)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _is_storage(exc: BaseException) -> bool:
    """botocore's endpoint and client errors (NoSuchBucket, AccessDenied, ...), by class name
    and module: botocore is imported only where the S3 store is used."""
    module = type(exc).__module__ or ""
    if module.startswith(("botocore", "boto3", "s3transfer")):
        return True
    return type(exc).__name__ in {"BlobStoreUnavailable", "BlobNotFound"}


def _is_out_of_memory(exc: BaseException) -> bool:
    name = type(exc).__name__
    return name in {"OutOfMemoryError", "MemoryError"} or "out of memory" in str(exc).lower()
