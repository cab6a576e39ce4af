"""What a hostile or careless user tried, on SQLite and PostgreSQL: ids out of range, names that
differ only in case, a cancelled post approved, a failed first turn, input echoed back changed, an
unexpected error inside a handler, and a console session fed all of it."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.app import App, build_app
from bot.console import ConsoleFrontEnd
from commands.conversation import TEXT_UNEXPECTED
from commands.events import Attachment, Event, EventKind, Reply
from engine.specs import JobKind, JobResult, JobSpec
from storage.blobs import BlobStore
from storage.models import ThreadStatus
from tests.conversation.conftest import app_settings
from tests.conversation.helpers import errors, queued, run, texts
from tests.fakes.engine import FakeEngine

HUGE = "99999999999999999999999"
WHEN_THERE = "approve it when its images are there"


class FailingEngine(FakeEngine):
    """Paints like FakeEngine; while ``fail_posts`` is set, a post's first render fails."""

    fail_posts = False

    def run(
        self,
        spec: JobSpec,
        on_progress: Callable[[int, int], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> JobResult:
        if self.fail_posts and spec.kind == JobKind.GENERATE:
            raise RuntimeError("the GPU ran out of memory")
        return super().run(spec, on_progress, cancel)


@pytest.fixture
async def hostile(
    tmp_path: Path, shared_dirs: dict[str, Path], database_url: str
) -> AsyncIterator[tuple[App, FailingEngine]]:
    engine = FailingEngine(blobs=BlobStore(shared_dirs["blobs"]))
    app = await build_app(app_settings(tmp_path, shared_dirs, database_url=database_url), engine=engine)
    yield app, engine
    await app.close()


def _console(app: App, tmp_path: Path, user: str) -> ConsoleFrontEnd:
    return ConsoleFrontEnd(app.conversation, tmp_path / user, user=user, stream=io.StringIO(), live=False)


def _command(user: str, command: str, args: str) -> Event:
    return Event(platform="console", user_id=user, kind=EventKind.COMMAND, command=command, args=args)


def _reaction(user: str, command: str, turn_id: int) -> Event:
    return Event(platform="console", user_id=user, kind=EventKind.REACTION, command=command, turn_id=turn_id)


async def test_ids_are_parsed_once_and_bounded(hostile: tuple[App, Any], tmp_path: Path) -> None:
    app, _ = hostile
    ann = _console(app, tmp_path, "ann")
    await run(ann, "/persona create sweet Mia")
    await run(ann, "/post Mia count=1 latte")
    post_id = (await app.store.user("console", "ann")).current_thread_id
    for line in ("/thread ²", f"/thread {HUGE}", f"/thread #{HUGE}", "/thread -1", "/thread 0"):
        refused = errors(await ann.send(line))
        assert refused and "no post" in refused[0], line
    assert (await app.store.user("console", "ann")).current_thread_id == post_id  # unchanged
    for big in (10**22, 2**31, 2**63):
        answer = await app.conversation.handle(_reaction("ann", "approve", big))
        assert [a.text for a in answer if isinstance(a, Reply)] == ["⚠️ That result no longer exists"]
    # someone else's post and a missing one get the same answer
    missing = post_id + 1000
    # (one console front end per conversation: bob talks to the conversation directly)
    theirs = errors(await app.conversation.handle(_command("bob", "thread", str(post_id))))[0]
    absent = errors(await app.conversation.handle(_command("bob", "thread", str(missing))))[0]
    assert theirs.replace(str(post_id), "N") == absent.replace(str(missing), "N")
    assert (await app.store.user("console", "bob")).current_thread_id is None


async def test_names_that_differ_only_in_case_are_one_persona(hostile: tuple[App, Any], tmp_path: Path) -> None:
    app, _ = hostile
    ann = _console(app, tmp_path, "ann")
    await run(ann, "/persona create sweet Mia")
    refused = errors(await ann.send("/persona create sweet mia"))
    assert refused and "already has a persona named 'mia'" in refused[0]
    await run(ann, "/persona create sweet Mila")
    deleted = await ann.send("/persona delete mia")
    assert "Persona Mia deleted" in texts(deleted)
    owner = await app.store.user("console", "ann")
    assert [p.name for p in await app.store.list_personas(owner.id)] == ["Mila"]
    # beyond ASCII: SQLite's lower() does not fold É
    await run(ann, "/persona create sweet Élodie")
    assert not errors(await ann.send("/persona show élodie"))
    await run(ann, "/post ÉLODIE count=1 by the sea")
    assert "Persona Élodie deleted" in texts(await ann.send("/persona delete Élodie"))


async def test_a_cancelled_post_stays_closed(hostile: tuple[App, Any], tmp_path: Path) -> None:
    app, _ = hostile
    ann = _console(app, tmp_path, "ann")
    await run(ann, "/persona create sweet Mia")
    await run(ann, "/post Mia count=1 latte")
    post_id = (await app.store.user("console", "ann")).current_thread_id
    turn_id = (await app.store.get_thread(post_id)).current_turn_id
    assert "the post is closed" in texts(await ann.send("/cancel"))
    for line in ("/approve", "make it blue", "/undo"):
        refused = errors(await ann.send(line))
        assert refused and "closed" in refused[0], line
    answer = await app.conversation.handle(_reaction("ann", "approve", turn_id))
    assert "closed" in answer[0].text  # type: ignore[attr-defined]
    thread = await app.store.get_thread(post_id)
    assert thread.status == ThreadStatus.CANCELLED
    assert not (await app.store.get_turn(turn_id)).approved


async def test_a_failed_first_turn_says_so_and_offers_regen(hostile: tuple[App, Any], tmp_path: Path) -> None:
    app, engine = hostile
    ann = _console(app, tmp_path, "ann")
    await run(ann, "/persona create sweet Mia")
    engine.fail_posts = True
    await run(ann, "/post Mia count=1 latte")
    for line in ("/approve", "make it blue"):
        refused = errors(await ann.send(line))
        assert refused and "failed" in refused[0] and "/regen" in refused[0], line
        assert "not finished" not in refused[0] and "wait for them" not in refused[0]
    engine.fail_posts = False
    regen = await run(ann, "/regen")
    assert queued(regen) and not errors(regen)
    assert "Approved" in texts(await ann.send("/approve"))


async def test_approving_a_failed_turn_or_one_still_rendering_says_why_and_changes_nothing(
    hostile: tuple[App, Any], tmp_path: Path
) -> None:
    """Issue 20 item 14: the refusal of an approve with nothing to approve is a clear sentence (the
    turn, why, what to do), for the command and the result's button alike, and approves nothing."""
    app, engine = hostile
    ann = _console(app, tmp_path, "ann")
    await run(ann, "/persona create sweet Mia")

    async def refused(turn_id: int) -> list[str]:
        said = errors(await ann.send("/approve"))
        pressed = await app.conversation.handle(_reaction("ann", "approve", turn_id))
        said += [a.text for a in pressed if isinstance(a, Reply) and a.private]
        assert len(said) == 2, said
        post = (await app.store.user("console", "ann")).current_thread_id
        assert (await app.store.get_thread(post)).status == ThreadStatus.OPEN
        assert not (await app.store.get_turn(turn_id)).approved
        assert [e.action for e in await app.store.activity(post)] == ["created"]
        return said

    engine.fail_posts = True
    (failed_job,) = queued(await run(ann, "/post Mia count=1 latte"))
    turn = await app.store.turn_for_job(failed_job)
    for text in await refused(turn.id):
        assert text.startswith(f"⚠️ Turn #{turn.id} failed (") and "so there is nothing to approve;" in text, text
        assert text.endswith("🔁 /regen renders it again"), text
    engine.fail_posts = False

    engine.release.clear()  # the next post renders until released: no result yet
    (job_id,) = queued(await ann.send("/post Mia count=1 espresso"))
    turn = await app.store.turn_for_job(job_id)
    for text in await refused(turn.id):
        assert text == f"⚠️ Turn #{turn.id} is still rendering, so there is nothing to approve yet; {WHEN_THERE}"
    engine.release.set()
    await ann.wait_job(job_id, limit_s=30)
    assert "Approved" in texts(await ann.send("/approve"))


async def test_error_texts_quote_input_as_given(hostile: tuple[App, Any], tmp_path: Path) -> None:
    app, _ = hostile
    ann = _console(app, tmp_path, "ann")
    settings = errors(await ann.send("/settings steps=100000"))
    assert settings and "'steps=100000'" in settings[0]
    event = Event(
        platform="console",
        user_id="ann",
        kind=EventKind.MESSAGE,
        attachments=(Attachment(filename="bomb-30000x30000.png", data=b""),),
    )
    answer = await app.conversation.handle(event)
    assert "'bomb-30000x30000.png' is empty" in answer[0].text  # type: ignore[attr-defined]


async def test_an_unexpected_error_is_logged_answered_and_the_session_goes_on(
    hostile: tuple[App, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = hostile
    ann = _console(app, tmp_path, "ann")

    async def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(app.store, "list_threads_in", broken)
    with caplog.at_level(logging.ERROR):
        answer = await ann.send("/threads")
    assert [a.text for a in answer if isinstance(a, Reply)] == [TEXT_UNEXPECTED]
    assert any(r.exc_info and "disk on fire" in str(r.exc_info[1]) for r in caplog.records)
    monkeypatch.undo()
    assert "No posts yet" in texts(await ann.send("/threads"))


def test_no_input_ends_a_console_session(tmp_path: Path) -> None:
    lines = ["/thread ²", f"/thread {HUGE}", "@/" + "x" * 5000 + ".png hello", "/settings size=1e400x2", "/help"]
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}",
        "BLOB_DIR": str(tmp_path / "blobs"),
        "LORA_DIR": str(tmp_path / "loras"),
        "ENGINE_MODEL": "tiny",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("REDIS_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "chat", "--user", "ann"],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stdout.count("⚠️") >= 4
    assert "/persona create" in done.stdout.split("⚠️")[-1]  # /help answered after all of it
