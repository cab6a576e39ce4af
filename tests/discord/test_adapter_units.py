"""Unit tests of the Discord adapter's pure translation helpers."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import discord
import pytest
from PIL import Image

from bot.discord.permissions import REQUIRED_PERMISSIONS, invite_url
from bot.discord.progress import ProgressBoard, render_progress
from bot.discord.render import message_chunks
from bot.discord.translate import UserFacingError, custom_id, download_attachments, parse_custom_id, strip_mentions
from bot.discord.uploads import fit_image
from commands.events import Button, Progress, Where
from tests.discord.helpers import png_bytes

WHERE = Where(platform="discord", user_id="1", thread_db_id=3, channel_id=10, thread_id=20)


def test_custom_ids_round_trip_and_reject_others() -> None:
    for button in Button:
        assert parse_custom_id(custom_id(button, 42)) == (button, 42)
    assert parse_custom_id("persona:approve:") is None
    assert parse_custom_id("persona:delete:4") is None
    assert parse_custom_id("other:approve:4") is None
    assert len(custom_id(Button.CANCEL, 2**63 - 1)) <= 100


def test_invite_url_carries_the_documented_permissions() -> None:
    perms = REQUIRED_PERMISSIONS
    assert perms.send_messages_in_threads and perms.create_public_threads and perms.manage_messages
    assert perms.value == 309237754944
    assert invite_url(123) == (
        "https://discord.com/oauth2/authorize?client_id=123&scope=bot+applications.commands&permissions=309237754944"
    )


def test_split_text_respects_the_2000_limit() -> None:
    text = "\n".join(f"line {i} " + "x" * 90 for i in range(60))
    chunks = message_chunks(text)
    assert len(chunks) > 1 and all(len(c) <= 2000 for c in chunks)
    assert "".join(c.replace("\n", "") for c in chunks) == text.replace("\n", "")
    assert message_chunks("x" * 4500) == ["x" * 2000, "x" * 2000, "x" * 500]


def test_strip_mentions_of_the_bot_only() -> None:
    assert strip_mentions("<@99> hold it higher <@5>", 99) == "hold it higher <@5>"
    assert strip_mentions("<@!99>   more light", 99) == "more light"


def test_render_progress_states() -> None:
    assert "2 jobs ahead" in render_progress(Progress(where=WHERE, job_id="j", state="queued", position=2))
    assert "you are next" in render_progress(Progress(where=WHERE, job_id="j", state="queued", position=0))
    running = render_progress(Progress(where=WHERE, job_id="j", state="running", step=5, total=10, eta_s=75))
    assert "5/10" in running and "█" * 10 in running and "ETA 1 min 15 s" in running
    failed = render_progress(Progress(where=WHERE, job_id="j", state="failed", text="out of GPU memory"))
    # the advice (🔁 only where a new seed helps: commands.outputs.failure_text) is the reply's
    assert "out of GPU memory" in failed and "🔁" not in failed
    assert "🔁" not in render_progress(Progress(where=WHERE, job_id="j", state="failed"))
    assert "Done in 12 s" in render_progress(Progress(where=WHERE, job_id="j", state="done"), 12.2)


def test_fit_image_keeps_small_png_and_shrinks_large_one() -> None:
    small = png_bytes(32, 32)
    assert fit_image(small, "a.png", 10_000) == (small, "a.png")
    big = png_bytes(256, 256, noise=True)
    limit = len(big) // 4
    data, name = fit_image(big, "post1-turn2-1.png", limit)
    assert len(data) <= limit and name.rsplit(".", 1)[1] in {"jpg", "webp"}
    with Image.open(io.BytesIO(data)) as image:
        assert image.format in {"JPEG", "WEBP"}
    with pytest.raises(ValueError):
        fit_image(big, "x.png", 10)


@dataclass
class _Sent:
    channel: Any
    id: int


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_progress_board_throttles_and_flushes_state_changes() -> None:
    clock = _Clock()
    sent: list[str] = []
    edits: list[tuple[float, str]] = []

    async def send(where: Where, text: str) -> Any:
        sent.append(text)
        return _Sent(channel=discord.Object(20), id=555)

    async def edit(channel_id: int, message_id: int, text: str, **_: Any) -> None:
        assert (channel_id, message_id) == (20, 555)
        edits.append((clock.now, text))

    board = ProgressBoard(send, edit, interval=1.5, clock=clock)
    await board.update(Progress(where=WHERE, job_id="j", state="queued", position=1))
    assert len(sent) == 1 and "1 job ahead" in sent[0]
    clock.now += 0.1
    await board.update(Progress(where=WHERE, job_id="j", state="running", step=1, total=10))  # state change: now
    assert len(edits) == 1 and "1/10" in edits[0][1]
    for step in range(2, 6):  # within 1.5 s of the last edit: kept, not shown
        clock.now += 0.1
        await board.update(Progress(where=WHERE, job_id="j", state="running", step=step, total=10))
    assert len(edits) == 1
    clock.now += 1.5
    await board.update(Progress(where=WHERE, job_id="j", state="running", step=7, total=10))
    assert len(edits) == 2 and "7/10" in edits[1][1]
    await board.update(Progress(where=WHERE, job_id="j", state="queued", position=3))  # stale: ignored
    clock.now += 0.1
    await board.update(Progress(where=WHERE, job_id="j", state="done"))  # finished: shown at once
    assert len(edits) == 3 and edits[2][1].startswith("✅ Done")
    await board.update(Progress(where=WHERE, job_id="j", state="running", step=9, total=10))  # after the end
    assert len(edits) == 3 and len(sent) == 1
    await board.close()


async def test_progress_board_does_not_post_for_a_job_that_finished_unseen() -> None:
    sent: list[str] = []

    async def send(where: Where, text: str) -> Any:
        sent.append(text)
        return _Sent(channel=discord.Object(1), id=1)

    async def edit(channel_id: int, message_id: int, text: str, **_: Any) -> None:
        raise AssertionError("no message to edit")

    board = ProgressBoard(send, edit)
    await board.update(Progress(where=WHERE, job_id="k", state="done"))
    assert sent == []


@dataclass
class _Upload:
    """A stand-in discord.Attachment that counts downloads."""

    filename: str
    size: int = 10
    content_type: str | None = "image/png"
    reads: int = 0

    async def read(self) -> bytes:
        self.reads += 1
        return b"x" * self.size


async def test_download_attachments_refuses_more_than_four_without_downloading() -> None:
    uploads = [_Upload(f"{name}.png") for name in "abcde"]
    with pytest.raises(UserFacingError, match="at most 4 images; this message has 5"):
        await download_attachments(uploads)  # type: ignore[arg-type]
    assert [u.reads for u in uploads] == [0] * 5
    one = _Upload("a.png")
    (attachment,) = await download_attachments([one])  # type: ignore[list-item]
    assert (attachment.filename, attachment.data, one.reads) == ("a.png", b"x" * 10, 1)
