"""What a delivered turn shows: its images and clip (read from the blob store in a thread), captions
with identity scores, and the short text of a failure. Used by the delivery and the handlers."""

from __future__ import annotations

import asyncio
from typing import Any

from commands.events import ClipOut, ImageOut
from commands.texts import format_score
from engine.jobs.failures import MESSAGES_ZH
from storage.blobs import BlobStore
from storage.models import Job


def _caption(scores: list, notes: list, index: int) -> str:
    score = scores[index] if index < len(scores) else None
    note = notes[index] if index < len(notes) else ""
    text = f"image {index + 1} · {format_score(score)}"
    return f"{text} ({note})" if note and note != "ok" else text


async def image_out(blobs: BlobStore, key: str, filename: str, caption: str = "") -> ImageOut:
    """An image of the blob store as front ends get it: path, name, caption, size. The blob
    store's calls run in a thread: with S3 they are network round trips (a download into the
    local cache), which must not stall the front end's event loop."""

    def describe() -> ImageOut:
        info = blobs.info(key)
        path = str(blobs.path(key))
        return ImageOut(
            blob_key=key, path=path, filename=filename, caption=caption, width=info.width, height=info.height
        )

    return await asyncio.to_thread(describe)


async def clip_out(blobs: BlobStore, turn: Any) -> ClipOut | None:
    """The clip of a video turn (None for other turns): paths in the blob store, facts, a caption
    with its length, frame rate and the identity score of its sampled frames."""
    video = (turn.params or {}).get("video")
    if not video:
        return None

    def describe() -> ClipOut:
        identity = video.get("identity") or {}
        note = identity.get("note") or ""
        score = format_score(identity.get("score"))
        caption = f"{video['seconds']:g} s · {video['fps']} fps · {video['width']}x{video['height']} · {score}"
        if note and note != "ok":
            caption += f" ({note})"
        small = video.get("small_key")
        return ClipOut(
            blob_key=video["key"],
            path=str(blobs.path(video["key"])),
            filename=f"post{turn.thread_id}-turn{turn.id}.mp4",
            size=int(video["bytes"]),
            seconds=float(video["seconds"]),
            fps=int(video["fps"]),
            frames=int(video["frames"]),
            width=int(video["width"]),
            height=int(video["height"]),
            poster_path=str(blobs.path(video["poster_key"])),
            small_path=str(blobs.path(small)) if small else None,
            small_size=video.get("small_bytes"),
            caption=caption,
        )

    return await asyncio.to_thread(describe)


async def turn_images(blobs: BlobStore, turn: Any, notes: list[str] | None = None) -> tuple[ImageOut, ...]:
    """The images of a turn, captioned with their number and identity score."""
    scores = list(turn.identity_scores or [])
    return tuple(
        await asyncio.gather(
            *(
                image_out(
                    blobs,
                    key,
                    f"post{turn.thread_id}-turn{turn.id}-{index + 1}.png",
                    _caption(scores, notes or [], index),
                )
                for index, key in enumerate(turn.image_keys or [])
            )
        )
    )


def _failure_advice(job: Job) -> str | None:
    """What helps after a failed job: ``name_free`` (a persona's name is free again), ``retry``
    (again, or 🔁 with a new seed: not for a photo without a face, nor a training none of whose
    renders matched its face), or None."""
    if job.kind == "create_persona":
        return "name_free"
    return "retry" if ((job.result or {}).get("failure") or {}).get("retryable", True) else None


_ADVICE = {
    "retry": " Send the instruction again, or 🔁 to try with a new seed.",
    "name_free": " The persona's name is free again: create it anew.",
}
_ADVICE_ZH = {
    "retry": "可以再发一次指令，或发送 /重来 换个随机种子重试。",
    "name_free": "这个人设名称已释放，可以重新创建。",
}


def failure_text(job: Job) -> str:
    """What the user reads about a failed job: its kind's short message and error id (the job's
    ``error``; internal details stay in ``result["failure"]``), and what helps."""
    advice = _failure_advice(job)
    return f"Sorry, that did not work: {job.error or 'unknown error'}." + (_ADVICE[advice] if advice else "")


def failure_text_zh(job: Job) -> str:
    """:func:`failure_text` in Chinese (for WeCom, shown before the English), or "" for a failure
    of no known kind (a job failed before kinds were recorded)."""
    failure = (job.result or {}).get("failure") or {}
    reason = MESSAGES_ZH.get(str(failure.get("kind")))
    if reason is None:
        return ""
    error_id = failure.get("error_id")
    advice = _failure_advice(job)
    text = f"抱歉，没有成功：{reason}" + (f"（错误编号 {error_id}）" if error_id else "") + "。"
    return text + (_ADVICE_ZH[advice] if advice else "")
