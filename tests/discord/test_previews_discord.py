"""Live previews on Discord: the job's status message (bar + ETA) carries the latest preview, edited
within the per-channel edit interval; the result replaces it; a cancelled job keeps its last one.
The board alone (with a test clock), then the real bot and Conversation against the fake Discord."""

from __future__ import annotations

import io
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import discord
import pytest
from PIL import Image

from bot.app import App, build_app
from bot.discord.progress import ProgressBoard
from bot.discord.render import PREVIEW_FILENAME
from commands.events import PreviewOut, Progress, Where
from storage.blobs import BlobStore
from storage.settings import load_settings
from tests.discord.conftest import StartBot
from tests.fakes.discord_server import FakeDiscord, RecordedRequest
from tests.fakes.previews import PreviewingEngine, jpeg

WHERE = Where(platform="discord", user_id="1", thread_db_id=1, channel_id=20, thread_id=30)
JOB_TIMEOUT_S = 60.0


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class _Sent:
    channel: Any
    id: int


def _preview(seq: int, percent: int) -> PreviewOut:
    return PreviewOut(seq, percent, jpeg((10 * seq, 0, 0)), 64, 48)


async def test_the_board_attaches_the_newest_preview_to_its_next_edit_and_spaces_edits_per_channel() -> None:
    clock = _Clock()
    edits: list[tuple[float, int, str, bytes | None, bool]] = []
    ids = iter(range(500, 600))

    async def send(where: Where, text: str) -> Any:
        return _Sent(channel=discord.Object(20), id=next(ids))

    async def edit(channel_id: int, message_id: int, text: str, *, image: bytes | None = None, clear: bool = False):
        edits.append((clock.now, message_id, text, image, clear))

    board = ProgressBoard(send, edit, interval=1.5, clock=clock)
    running = {"where": WHERE, "state": "running", "total": 8}
    await board.update(Progress(job_id="a", state="queued", where=WHERE))
    await board.update(Progress(job_id="b", state="queued", where=WHERE))
    clock.now += 2
    await board.update(Progress(job_id="a", step=1, **running))  # a change of state: at once
    await board.update(Progress(job_id="a", step=2, preview=_preview(1, 25), **running))  # too soon: kept
    await board.update(Progress(job_id="a", step=3, preview=_preview(2, 38), **running))  # the newer one wins
    clock.now += 0.5
    await board.update(Progress(job_id="b", state="cancelled", where=WHERE))  # a change of state: at once
    assert [(e[1], e[3]) for e in edits] == [(500, None), (501, None)]
    clock.now += 1.0  # 1.5 s after a's edit, but only 1 s after the last edit in the channel
    await board.update(Progress(job_id="a", step=4, **running))
    assert len(edits) == 2
    clock.now += 0.5
    await board.update(Progress(job_id="a", step=5, **running))
    assert edits[-1][1:] == (500, edits[-1][2], _preview(2, 38).jpeg, False)
    assert "5/8" in edits[-1][2] and "👁 preview at 38 %" in edits[-1][2]
    await board.update(Progress(job_id="a", state="done", where=WHERE))
    assert edits[-1][2].startswith("✅ Done") and edits[-1][3:] == (None, True)  # the result replaces it
    await board.close()


async def test_a_cancelled_job_keeps_its_last_preview_marked_cancelled() -> None:
    edits: list[tuple[str, bytes | None, bool]] = []

    async def send(where: Where, text: str) -> Any:
        return _Sent(channel=discord.Object(20), id=7)

    async def edit(channel_id: int, message_id: int, text: str, *, image: bytes | None = None, clear: bool = False):
        edits.append((text, image, clear))

    board = ProgressBoard(send, edit, interval=0.0)
    await board.update(Progress(job_id="c", state="queued", where=WHERE))
    await board.update(Progress(job_id="c", state="running", step=4, total=8, preview=_preview(1, 50), where=WHERE))
    await board.update(Progress(job_id="c", state="cancelled", where=WHERE))
    assert edits[-2][1] == _preview(1, 50).jpeg
    assert edits[-1] == ("🚫 Cancelled — its last preview (at 50 %) stays here.", None, False)


# -- the real bot on the fake Discord ---------------------------------------------------------------------


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    settings = load_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/db.sqlite",
        blob_dir=tmp_path / "blobs",
        lora_dir=tmp_path / "loras",
        engine_model="tiny",
        redis_url=None,
    )
    colours = {step: (step * 9 % 256, 80, 255 - step * 9 % 256) for step in range(2, 40, 2)}
    engine = PreviewingEngine(blobs=BlobStore(settings.blob_dir), steps=40, previews=colours, step_s=0.03)
    application = await build_app(settings, engine=engine)
    yield application
    await application.close()


async def _post(fake: FakeDiscord, app: App) -> int:
    """A ready persona (straight in storage) and ``/post``; the post thread's id."""
    owner = await app.store.user("discord", fake.owner["id"])
    guild = await app.store.workspace("discord", str(fake.guild_id))  # the server's workspace
    persona = await app.store.create_persona(owner.id, "mia", "sweet", [("sweet/a", 1.0)], 7, workspace_id=guild.id)
    await app.store.persona_ready(persona.id, None, None, [("sweet/a", 1.0)])
    mark = fake.mark()
    await fake.send_interaction(fake.slash_command("post", {"persona": "mia", "prompt": "latte", "count": 1}))
    created = await fake.wait_request(route="create_thread_from_message", since=mark)
    return int(created.response["id"])


def _status_edits(fake: FakeDiscord, channel_id: int) -> list[RecordedRequest]:
    return [r for r in fake.requests_for("edit_message") if r.vars.get("channel_id") == str(channel_id)]


async def test_status_message_carries_previews_within_the_channels_edit_interval(
    fake: FakeDiscord, start_bot: StartBot, app: App
) -> None:
    interval = 0.4
    await start_bot(app.conversation, progress_interval=interval)
    thread_id = await _post(fake, app)
    done = await fake.wait_request(
        lambda r: (
            r.vars.get("channel_id") == str(thread_id) and str((r.json or {}).get("content", "")).startswith("✅")
        ),
        route="edit_message",
        timeout_s=JOB_TIMEOUT_S,
    )
    edits = _status_edits(fake, thread_id)
    assert edits[-1] is done and done.json.get("attachments") == [] and not done.files  # the result replaces it
    running = [r for r in edits if str(r.json.get("content", "")).startswith("🎨")]
    with_preview = [r for r in running if r.files]
    assert len(with_preview) >= 2, [r.json for r in edits]
    engine = app.conversation.queue._runner.engine  # the PreviewingEngine
    frames = {jpeg(colour) for colour in engine.previews.values()}
    for request in with_preview:
        assert [f.filename for f in request.files] == [PREVIEW_FILENAME] and request.files[0].data in frames
        assert Image.open(io.BytesIO(request.files[0].data)).format == "JPEG"
        assert "👁 preview at" in request.json["content"]
    assert len(with_preview) < len(engine.previews)  # 19 previews, collapsed into the edits the interval allows
    # PATCHes in the post thread's channel: the first running one at once, then never closer than the interval
    times = [r.at for r in running]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps and min(gaps) >= interval * 0.95, gaps
    span = done.at - edits[0].at
    assert len(edits) <= 3 + span / interval, (len(edits), span)


async def test_a_cancelled_turn_keeps_its_last_preview_on_discord(
    fake: FakeDiscord, start_bot: StartBot, tmp_path: Path
) -> None:
    settings = load_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/gated.sqlite",
        blob_dir=tmp_path / "gated-blobs",
        lora_dir=tmp_path / "loras",
        engine_model="tiny",
        redis_url=None,
    )
    engine = PreviewingEngine(blobs=BlobStore(settings.blob_dir))  # steps when released: 2 red, 4 blue
    application = await build_app(settings, engine=engine)
    try:
        await start_bot(application.conversation, progress_interval=0.0)
        thread_id = await _post(fake, application)
        engine.steps.release(3)
        shown = await fake.wait_request(lambda r: r.vars.get("channel_id") == str(thread_id) and bool(r.files),
                                        route="edit_message", timeout_s=JOB_TIMEOUT_S)  # fmt: skip
        status_id = int(shown.vars["message_id"])
        mark = fake.mark()
        await fake.send_interaction(fake.slash_command("cancel", {}, channel_id=thread_id))
        cancelled = await fake.wait_request(
            lambda r: r.vars.get("message_id") == str(status_id) and "Cancelled" in str((r.json or {}).get("content")),
            route="edit_message",
            timeout_s=JOB_TIMEOUT_S,
        )
        assert cancelled.json["content"] == "🚫 Cancelled — its last preview (at 25 %) stays here."
        assert "attachments" not in cancelled.json and not cancelled.files  # the preview is left as it was
        kept = fake.messages[status_id]["attachments"]
        assert [a["filename"] for a in kept] == [PREVIEW_FILENAME]
        # the /cancel's answer told the user: the job's delivery edits its status message, posts nothing new
        owner = await application.store.user("discord", fake.owner["id"])
        (job,) = await application.store.user_jobs(owner.id, unfinished_only=False)
        await application.conversation.delivery.deliver_job(job.id)  # delivered already, or now: once either way
        assert (await application.store.get_job(job.id)).delivered
        posted = [r.json for r in fake.requests_for("create_message", since=mark)]
        assert [m for m in posted if "Cancel" in str((m or {}).get("content"))] == [], posted
    finally:
        engine.steps.release(100)
        await application.close()
