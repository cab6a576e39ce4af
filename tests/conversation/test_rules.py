"""Rules every front end inherits: owner-only changes, per-user limits, input validation."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.app import App, build_app
from bot.console import ConsoleFrontEnd
from commands.events import Attachment, ChooseRole, Event, EventKind, Images, OpenThread, Reply
from storage.models import JobStatus
from tests.conversation.conftest import app_settings, png_bytes
from tests.conversation.helpers import errors, job_spec, queued, run
from tests.fakes.engine import FakeEngine


def _event(user: str, kind: EventKind, **fields: Any) -> Event:
    return Event(platform="console", user_id=user, kind=kind, **fields)


async def _counts(app: App) -> tuple[int, int, int]:
    from sqlalchemy import func, select

    from storage.models import Job, Thread, Turn

    async with app.db.session() as s:
        return (
            await s.scalar(select(func.count()).select_from(Thread)),
            await s.scalar(select(func.count()).select_from(Turn)),
            await s.scalar(select(func.count()).select_from(Job)),
        )


async def test_strangers_change_nothing_and_admins_may(
    tmp_path: Path, shared_dirs: dict[str, Path], tiny_engine: Any
) -> None:
    app = await build_app(app_settings(tmp_path, shared_dirs, admin_ids=["console:boss"]), engine=tiny_engine)
    try:
        ann = ConsoleFrontEnd(app.conversation, tmp_path / "ann", user="ann", stream=io.StringIO(), live=False)
        await run(ann, "/persona create puppy Kiki")
        await run(ann, "/post Kiki count=1 at the park")
        thread_id = (await app.store.user("console", "ann")).current_thread_id
        before_thread = await app.store.get_thread(thread_id)
        before_counts = await _counts(app)
        conv = app.conversation
        turn_id = before_thread.current_turn_id

        refusals = []
        for button in ("approve", "regen", "undo", "cancel"):
            refusals += await conv.handle(_event("mallory", EventKind.REACTION, command=button, turn_id=turn_id))
        refusals += await conv.handle(_event("mallory", EventKind.COMMAND, command="thread", args=str(thread_id)))
        # mallory is a member of the console's workspace: she sees its persona, not ann's post
        shown = await conv.handle(_event("mallory", EventKind.COMMAND, command="persona", args="show Kiki"))
        assert shown[0].text.startswith("Kiki — puppy")  # type: ignore[attr-defined]
        # even "inside" the post (as in a Discord thread), history and export are the author's (and
        # reviewers'): they carry the persona's seed and LoRA mix
        mallory = await app.store.user("console", "mallory")
        await app.store.set_current_thread(mallory.id, thread_id)
        for command in ("history", "export", "settings"):
            args = "post steps=9" if command == "settings" else ""
            refusals += await conv.handle(_event("mallory", EventKind.COMMAND, command=command, args=args))
        refusals += await conv.handle(_event("mallory", EventKind.MESSAGE, text="make it blue"))
        await app.store.set_current_thread(mallory.id, None)
        assert len(refusals) == 9
        assert all(r.private and r.text.startswith("⚠️") for r in refusals)  # type: ignore[attr-defined]
        assert sum("only the author" in r.text.lower() for r in refusals) == 8  # type: ignore[attr-defined]
        # /thread <theirs> answers as for a missing post: nothing tells whether #N exists
        assert sum(f"no post #{thread_id} " in r.text for r in refusals) == 1  # type: ignore[attr-defined]
        after_thread = await app.store.get_thread(thread_id)
        assert after_thread.current_turn_id == before_thread.current_turn_id
        assert after_thread.status == before_thread.status
        assert not (await app.store.get_turn(turn_id)).approved
        assert await _counts(app) == before_counts
        assert (await app.store.user("console", "mallory")).current_thread_id is None

        # an admin may act in anyone's post
        approved = await conv.handle(_event("boss", EventKind.REACTION, command="approve", turn_id=turn_id))
        assert "Approved" in approved[0].text  # type: ignore[attr-defined]
        assert (await app.store.get_turn(turn_id)).approved
    finally:
        await app.close()


@pytest.fixture
async def held_app(tmp_path: Path, shared_dirs: dict[str, Path], tiny_engine: Any) -> AsyncIterator[tuple[App, Any]]:
    engine = FakeEngine(tiny_engine, gated=True)  # every run waits for engine.release (a busy GPU)
    settings = app_settings(tmp_path, shared_dirs, max_running_jobs=1, max_waiting_jobs=2)
    app = await build_app(settings, engine=engine)
    yield app, engine
    engine.release.set()
    await app.close()


async def test_per_user_job_limit_and_queue_positions(held_app: tuple[App, Any], tmp_path: Path) -> None:
    app, engine = held_app
    ann = ConsoleFrontEnd(app.conversation, tmp_path / "o", user="ann", stream=io.StringIO(), live=False)
    first = await ann.send("/persona create sweet A")
    second = await ann.send("/persona create sweet B")
    third = await ann.send("/persona create sweet C")
    positions = [
        next(a.position for a in actions if getattr(a, "state", "") == "queued") for actions in (first, second, third)
    ]
    assert positions == [0, 1, 2] or positions == [1, 1, 2]  # the first may already be running
    refused = await ann.send("/persona create sweet D")
    assert errors(refused) and "limit" in errors(refused)[0]
    owner = await app.store.user("console", "ann")
    assert [p.name for p in await app.store.list_personas(owner.id)] == ["A", "B", "C"]
    status = await ann.send("/status")
    assert status[0].text.count("create_persona") == 3  # type: ignore[attr-defined]
    assert "waiting" in status[0].text  # type: ignore[attr-defined]
    # another user is not limited by ann's jobs
    # (one console front end per process: bob talks to the conversation directly)
    bob = await app.conversation.handle(_event("bob", EventKind.COMMAND, command="persona", args="create boss Max"))
    assert queued(bob)

    # cancel a waiting job: it never runs and is reported cancelled once
    waiting_id = queued(third)[0]
    assert await app.conversation.queue.cancel(waiting_id)
    await ann.wait_job(waiting_id, limit_s=30)
    assert (await app.store.get_job(waiting_id)).status == JobStatus.CANCELLED
    engine.release.set()
    for job_id in queued(first) + queued(second):
        await ann.wait_job(job_id, limit_s=120)
    assert (await app.store.get_job(waiting_id)).status == JobStatus.CANCELLED
    cancelled_replies = [a for a in ann.actions if getattr(a, "text", "") == "Cancelled ❌"]
    assert len(cancelled_replies) == 1


def _bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG header claiming 10 gigapixels, with a few bytes of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def _gif() -> bytes:
    buf = io.BytesIO()
    Image.new("P", (8, 8)).save(buf, format="GIF")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("name", "make", "expected"),
    [
        ("corrupt", lambda: b"\x89PNG\r\n\x1a\n" + b"garbage" * 50, "not a readable image"),
        ("truncated", lambda: png_bytes((64, 64))[:-40], "corrupt or truncated"),
        ("bomb", _bomb_png, "too large in pixels"),
        ("over 40 MP", lambda: _bomb_png(8000, 6000), "at most 40 megapixels"),
        ("gif", _gif, "send PNG, JPEG or WebP"),
        ("oversized", lambda: png_bytes() + b"\0" * (20 * 1024 * 1024), "at most 20 MB"),
    ],
)
async def test_bad_attachments_are_refused_and_nothing_is_stored(
    app: App, console: ConsoleFrontEnd, name: str, make: Callable[[], bytes], expected: str
) -> None:
    await run(console, "/persona create sweet Mia")
    before = await _counts(app)
    blobs_before = sorted(app.blobs.root.rglob("*"))
    event = _event(
        "ann",
        EventKind.COMMAND,
        command="post",
        args="Mia a latte",
        attachments=(Attachment(filename=f"{name}.png", data=make()),),
    )
    actions = await app.conversation.handle(event)
    assert len(actions) == 1 and expected in actions[0].text, actions  # type: ignore[attr-defined]
    assert actions[0].private  # type: ignore[attr-defined]
    assert await _counts(app) == before
    assert sorted(app.blobs.root.rglob("*")) == blobs_before


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("/post Mia " + "x" * 1001, "at most 1000 are allowed"),
        ("/post Mia count=5 a latte", "count must be from 1 to 4"),
        ("/post Mia count=two a latte", "count must be a number"),
        ("/post Mia", "prompt is empty"),
        ("/post Nobody a latte", "no persona named"),
        ("/post", "usage: /post"),
    ],
)
async def test_bad_commands_are_refused_and_nothing_is_stored(
    app: App, console: ConsoleFrontEnd, line: str, expected: str
) -> None:
    await run(console, "/persona create sweet Mia")
    before = await _counts(app)
    found = errors(await console.send(line))
    assert found and expected.lower() in found[0].lower(), found
    assert await _counts(app) == before


async def test_a_long_edit_instruction_is_refused(app: App, console: ConsoleFrontEnd) -> None:
    await run(console, "/persona create sweet Mia")
    await run(console, "/post Mia a latte")
    before = await _counts(app)
    assert "at most 1000" in errors(await console.send("y" * 1001))[0]
    assert await _counts(app) == before


async def test_a_scene_image_sent_alone_is_used_by_the_next_post(app: App, console: ConsoleFrontEnd) -> None:
    await run(console, "/persona create sweet Mia")
    scene = png_bytes((96, 64), "teal")
    reply = await app.conversation.handle(
        _event("ann", EventKind.MESSAGE, attachments=(Attachment("scene.png", scene),))
    )
    # no role said: the user is asked; an image whose role was never chosen is the next post's scene
    assert isinstance(reply[0], ChooseRole) and reply[0].key == hashlib.sha256(scene).hexdigest()
    await run(console, "/post Mia count=1 on the beach")
    thread = await app.store.get_thread((await app.store.user("console", "ann")).current_thread_id)
    assert thread.scene_key is not None and app.blobs.get(thread.scene_key) == scene
    first = await app.store.get_turn(thread.current_turn_id)
    assert (await job_spec(app.store, first))["context_keys"] == [thread.scene_key]
    assert "context_keys" not in first.params and "targets" not in first.params


async def test_a_post_sent_while_its_persona_is_created_waits_for_it(held_app: tuple[App, Any], tmp_path: Path) -> None:
    """`/persona create` then `/post` at once: no retry needed, the post starts once the portrait exists."""
    app, engine = held_app
    ann = ConsoleFrontEnd(app.conversation, tmp_path / "ann", user="ann", stream=io.StringIO(), live=False)
    created = await ann.send("/persona create sweet Mia")
    posted = await ann.send("/post Mia count=1 iced latte in a sunny café")
    assert not errors(posted)
    opened = [a for a in posted if isinstance(a, OpenThread)]
    assert opened and "still being created" in opened[0].text
    (post_job,) = queued(posted)
    job = await app.store.get_job(post_job)
    assert job is not None and job.status == JobStatus.HELD  # not started while the persona is pending
    assert await app.conversation.queue.position(post_job) is None

    engine.release.set()
    for job_id in [*queued(created), post_job]:
        await ann.wait_job(job_id, limit_s=120)
    job = await app.store.get_job(post_job)
    persona = await app.store.find_persona((await app.store.user("console", "ann")).id, "Mia")
    assert job is not None and job.status == JobStatus.DONE
    # the job ran with the persona as it became: its portrait and mix, not the empty pending one
    assert job.spec["persona"]["reference_key"] == persona.reference_key is not None
    assert [list(pair) for pair in job.spec["persona"]["lora_mix"]] == [list(pair) for pair in persona.lora_mix]
    thread = await app.store.get_thread(job.thread_id)
    turn = await app.store.get_turn(thread.current_turn_id)
    assert len(turn.image_keys) == 1
    results = [a for a in ann.actions if isinstance(a, Images) and a.job_id == post_job]
    assert len(results) == 1 and results[0].images


async def test_a_post_waiting_for_a_persona_that_failed_is_told_so(held_app: tuple[App, Any], tmp_path: Path) -> None:
    app, engine = held_app
    ann = ConsoleFrontEnd(app.conversation, tmp_path / "ann", user="ann", stream=io.StringIO(), live=False)
    created = await ann.send("/persona create sweet Mia")
    posted = await ann.send("/post Mia count=1 on the beach")
    (post_job,) = queued(posted)
    (persona_job,) = queued(created)
    assert await app.conversation.queue.cancel(persona_job)  # the persona never gets made
    engine.release.set()
    await ann.wait_job(persona_job, limit_s=60)
    await ann.wait_job(post_job, limit_s=60)
    job = await app.store.get_job(post_job)
    assert job is not None and job.status == JobStatus.FAILED and "could not be created" in (job.error or "")
    assert "could not be created" in "\n".join(a.text for a in ann.actions if isinstance(a, Reply))
    persona = await app.store.find_persona((await app.store.user("console", "ann")).id, "Mia")
    assert persona is not None and persona.status == "failed"  # a later /post says so instead of waiting
    refused = errors(await ann.send("/post Mia count=1 again"))
    assert refused and "could not be created" in refused[0]
