"""/video through the console front end: the tiny Wan pipeline makes a playable clip of an approved
image, as a turn of its own (undo, regen, approve, /history, /export), refused input changes
nothing, and /cancel stops it."""

from __future__ import annotations

import io
import json
import shutil
import threading
import zipfile
from pathlib import Path

import pytest

from bot.app import App
from bot.console import ConsoleFrontEnd
from commands.events import FileOut, Images
from engine.video.mp4 import probe_mp4
from storage.models import JobStatus, TurnStatus
from tests.conversation.helpers import errors, queued, run, texts

needs_ffprobe = pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe (Debian's ffmpeg) not installed")


async def _approved_post(app: App, console: ConsoleFrontEnd) -> int:
    await run(console, "/persona create sweet Mia")
    await run(console, "/post Mia count=2 sipping a latte in a café")
    await run(console, "/approve")
    user = await app.store.user("console", "ann")
    assert user.current_thread_id is not None
    return user.current_thread_id


@needs_ffprobe
async def test_video_of_an_approved_image_is_a_playable_clip_turn(app: App, console: ConsoleFrontEnd) -> None:
    thread_id = await _approved_post(app, console)
    approved = await app.store.get_turn((await app.store.get_thread(thread_id)).current_turn_id)

    await run(console, "/video #2 seconds=4 motion=she lifts the cup and smiles")
    thread = await app.store.get_thread(thread_id)
    clip_turn = await app.store.get_turn(thread.current_turn_id)
    assert (clip_turn.kind, clip_turn.parent_id, clip_turn.status) == ("video", approved.id, TurnStatus.DONE)
    assert clip_turn.instruction == "she lifts the cup and smiles"
    assert clip_turn.image_keys == approved.image_keys  # the post's images stay; the clip is in params
    video = clip_turn.params["video"]
    assert video["source_key"] == approved.image_keys[1]
    job = await app.store.job_for_turn(clip_turn.id)
    assert job is not None and job.kind == "video" and "lifts the cup" in job.spec["prompt"]

    info = probe_mp4(app.blobs.path(video["key"]))
    assert (info.codec, info.pix_fmt) == ("h264", "yuv420p")
    assert info.frames == video["frames"] == 32 and info.fps == pytest.approx(8)  # 4 s at the tiny model's 8 fps
    assert info.duration == pytest.approx(4.0, abs=1e-3)

    delivered = [a for a in console.actions if isinstance(a, Images) and a.clip is not None]
    assert len(delivered) == 1 and delivered[0].turn_id == clip_turn.id
    saved = out_file(console, delivered[0].clip.filename)
    assert saved.read_bytes() == app.blobs.get(video["key"])
    assert f"🎬 {saved}" in console.stream.getvalue()  # type: ignore[attr-defined]

    history = texts(await console.send("/history"))
    assert "video" in history and "she lifts the cup" in history


@needs_ffprobe
async def test_a_clip_turn_regenerates_undoes_approves_and_exports(app: App, console: ConsoleFrontEnd) -> None:
    thread_id = await _approved_post(app, console)
    approved_id = (await app.store.get_thread(thread_id)).current_turn_id
    await run(console, "/video")
    first = await app.store.get_turn((await app.store.get_thread(thread_id)).current_turn_id)
    assert first.params["video"]["frames"] == 24 and first.params["source_index"] == 0  # 3 s, image 1

    await run(console, "/regen")
    again = await app.store.get_turn((await app.store.get_thread(thread_id)).current_turn_id)
    assert again.kind == "video" and again.id != first.id and again.parent_id == approved_id
    assert again.seed != first.seed and again.params["video"]["key"] != first.params["video"]["key"]

    await run(console, "/approve")
    exported = [a for a in await console.send("/export") if isinstance(a, FileOut)]
    archive = zipfile.ZipFile(io.BytesIO(exported[0].data))
    manifest = json.loads(archive.read("manifest.json"))
    entry = next(t for t in manifest["turns"] if t["id"] == again.id)
    assert entry["kind"] == "video" and entry["files"] == [
        f"videos/turn{again.id}.mp4",
        f"videos/turn{again.id}-poster.png",
    ]
    assert entry["video"]["sha256"] == again.params["video"]["key"] and entry["video"]["frames"] == 24
    assert archive.read(f"videos/turn{again.id}.mp4") == app.blobs.get(again.params["video"]["key"])
    assert probe_mp4(archive.read(f"videos/turn{again.id}.mp4")).codec == "h264"

    await run(console, "/undo")
    assert (await app.store.get_thread(thread_id)).current_turn_id == approved_id


async def test_bad_video_requests_are_refused_and_change_nothing(app: App, console: ConsoleFrontEnd) -> None:
    await run(console, "/persona create sweet Mia")
    await run(console, "/post Mia count=2 sipping a latte")
    user = await app.store.user("console", "ann")
    thread_id = user.current_thread_id
    before = len(await app.store.turns(thread_id))
    assert "approve a result first" in errors(await console.send("/video"))[0].lower()
    await run(console, "/approve")
    assert "3-5 seconds" in errors(await console.send("/video seconds=9"))[0]
    assert "#1 to #2" in errors(await console.send("/video #3"))[0]
    assert len(await app.store.turns(thread_id)) == before
    assert not await app.store.user_jobs(user.id)


async def test_cancel_stops_a_clip(app: App, console: ConsoleFrontEnd, tiny_engine) -> None:
    thread_id = await _approved_post(app, console)
    current = (await app.store.get_thread(thread_id)).current_turn_id
    held = threading.Event()
    release = threading.Event()

    def hold_model() -> None:  # another job on the model: the clip waits for the engine lock
        with tiny_engine.hold():
            held.set()
            release.wait(60)

    blocker = threading.Thread(target=hold_model)
    blocker.start()
    assert held.wait(60)
    try:
        [job_id] = queued(await console.send("/video"))
        assert "Cancelling 1 job" in texts(await console.send("/cancel"))
    finally:
        release.set()
        blocker.join(60)
    await console.wait_job(job_id, limit_s=120)
    job = await app.store.get_job(job_id)
    assert job is not None and job.status == JobStatus.CANCELLED
    assert (await app.store.get_thread(thread_id)).current_turn_id == current


def out_file(console: ConsoleFrontEnd, name: str) -> Path:
    return next(p for p in console.saved if p.name == name)
