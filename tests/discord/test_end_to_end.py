"""The Discord front end end to end: the real discord.py client against the fake Discord, the REAL
``commands.conversation.Conversation`` wired by ``bot.app.build_app`` (SQLite, blob store, embedded
queue, delivery) and the tiny FluxKontextPipeline engine on the CPU. No stand-in anywhere.

The engine loads once per module (~20 s of imports and dlib models); every test gets its own
database, blob store and app (``build_app(settings, engine=...)``), whose embedded queue runs
jobs on that one engine through a :class:`engine.jobs.runner.JobRunner` of its own. Nothing here sleeps
to synchronise: tests wait for the REST requests the bot makes (``fake.wait_request``), for job
events on the app's progress bus, or for the adapter's handlers to return.
"""

from __future__ import annotations

import asyncio
import io
import json
import struct
import threading
import zipfile
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bot.app import App, build_app
from bot.discord import PersonaBot
from engine.jobs.events import FINISHED_STATES
from engine.jobs.progress import ProgressBus
from storage.models import Job, Persona, Thread, User
from storage.settings import load_settings
from tests.discord.conftest import StartBot
from tests.discord.helpers import png_bytes
from tests.fakes.discord_server import (
    CALLBACK_DEFERRED_UPDATE_MESSAGE,
    MESSAGE_FLAG_EPHEMERAL,
    FakeDiscord,
    RecordedRequest,
)

#: generous: a tiny job takes about a second on one CPU core, a slow CI machine may take more
JOB_TIMEOUT_S = 60.0
ACTIONS = ("approve", "regen", "undo", "cancel")
REACTIONS = ["✅", "🔁", "↩️", "❌"]


# -- the engine and the app ----------------------------------------------------------------------


class SharedEngine:
    """The module's loaded tiny engine behind a gate: a test may hold jobs back (``gate.clear()``)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.gate = threading.Event()
        self.gate.set()

    def load(self) -> None:
        self.engine.load()

    def draw_mix(self, archetype: str, seed: int, k: int = 3) -> list[tuple[str, float]]:
        return self.engine.draw_mix(archetype, seed, k)

    def run(self, spec: Any, on_progress: Any = None, cancel: Any = None) -> Any:
        if not self.gate.wait(JOB_TIMEOUT_S):
            raise TimeoutError("the test never opened the engine's gate")
        from engine.jobs.dispatch import run_job  # the runner's own choice: a clip, or a render

        return run_job(self.engine, spec, on_progress, cancel)


@pytest.fixture(scope="module")
def tiny_engine(tmp_path_factory: pytest.TempPathFactory) -> Any:  # -> engine.render.engine.Engine
    """One tiny engine for the module, loaded before the first test starts its clock."""
    from engine.render.engine import Engine
    from storage.blobs import BlobStore

    root = tmp_path_factory.mktemp("discord-e2e-engine")
    settings = load_settings(  # made before the per-test chdir: no .env of the working folder
        _env_file=None, engine_model="tiny", engine_device="cpu", lora_dir=root / "loras", blob_dir=root / "blobs"
    )
    engine = Engine.from_settings(settings, BlobStore(settings.blob_dir))
    engine.load()
    return engine


@dataclass
class Studio:
    """The app of one test, the engine's gate and a way to wait for jobs to finish."""

    app: App
    engine: SharedEngine
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def store(self) -> Any:
        return self.app.store

    async def owner(self, fake: FakeDiscord) -> User:
        return await self.store.user("discord", fake.owner["id"])

    async def jobs(self, fake: FakeDiscord) -> list[Job]:
        return await self.store.user_jobs((await self.owner(fake)).id, unfinished_only=False)

    async def wait_job_finished(self, job_id: str, timeout_s: float = JOB_TIMEOUT_S) -> Job:
        """Wait until the job's row says it finished (re-checked on every event of the bus)."""

        async def wait() -> Job:
            async with self.changed:
                while True:
                    job = await self.store.get_job(job_id)
                    if job is not None and job.status in FINISHED_STATES:
                        return job
                    await self.changed.wait()

        return await asyncio.wait_for(wait(), timeout_s)

    async def watch(self, bus: ProgressBus) -> None:
        async for _event in bus.subscribe():
            async with self.changed:
                self.changed.notify_all()


@pytest.fixture
async def studio(tiny_engine: Any, tmp_path: Path) -> AsyncIterator[Studio]:
    """``build_app`` on a fresh SQLite database and blob store, its queue running the shared engine."""
    settings = load_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/db.sqlite",
        blob_dir=tmp_path / "blobs",
        lora_dir=tiny_engine.library.root,  # the library the shared engine wrote (its archetypes)
        engine_model="tiny",
        engine_device="cpu",
        redis_url=None,
    )
    shared = SharedEngine(tiny_engine)
    app = await build_app(settings, engine=shared)  # a JobRunner of this app around the shared engine
    tiny_engine.blobs = app.blobs  # the engine writes results into this test's blob store
    studio = Studio(app=app, engine=shared)
    watcher = asyncio.create_task(studio.watch(app.conversation.queue.bus))
    yield studio
    shared.gate.set()
    watcher.cancel()
    await app.close()


# -- helpers -------------------------------------------------------------------------------------


def content(request: RecordedRequest) -> str:
    return str((request.json or {}).get("content") or "")


def custom_ids(request: RecordedRequest) -> list[str]:
    return [c["custom_id"] for row in (request.json or {}).get("components") or [] for c in row["components"]]


def is_result(request: RecordedRequest, channel_id: int) -> bool:
    """A message with images and result buttons, posted in ``channel_id``."""
    return (
        request.route == "create_message"
        and request.status == 200
        and request.vars.get("channel_id") == str(channel_id)
        and bool(request.files)
        and bool(custom_ids(request))
    )


def turn_of(request: RecordedRequest) -> int:
    """The turn a result message acts on, read from its buttons' custom ids."""
    ids = custom_ids(request)
    turn = int(ids[0].rsplit(":", 1)[1])
    assert ids == [f"persona:{action}:{turn}" for action in ACTIONS]
    return turn


async def wait_result(fake: FakeDiscord, thread_id: int, since: int, text: str = "") -> RecordedRequest:
    """The next result message in the post thread (whose text contains ``text``)."""
    result = await fake.wait_request(
        lambda r: is_result(r, thread_id) and text in content(r), since=since, timeout_s=JOB_TIMEOUT_S
    )
    message_id = int(result.response["id"])
    await fake.wait_until(lambda: len(fake.reactions.get(message_id, {})) == 4)
    assert list(fake.reactions[message_id]) == REACTIONS
    assert all(fake.reaction_users(message_id, emoji) == [fake.application_id] for emoji in REACTIONS)
    return result


async def create_persona(fake: FakeDiscord, studio: Studio, name: str = "mia") -> Persona:
    """``/persona create`` in #general; waits for the portrait posted there when the job is done."""
    mark = fake.mark()
    interaction = await fake.send_interaction(
        fake.slash_command("persona", {"archetype": "sweet", "name": name}, subcommand="create")
    )
    answer = await fake.wait_request(route="webhook_edit", since=mark)
    assert content(answer).startswith(f"Creating persona {name} (sweet)")
    assert fake.messages[interaction.original_message_id or 0]["flags"] == 0  # public, in the channel
    ready = await fake.wait_request(
        lambda r: r.status == 200 and "is ready" in content(r) and bool(r.files),
        route="create_message",
        since=mark,
        timeout_s=JOB_TIMEOUT_S,
    )
    # A job without a post thread reports to the channel the command came from.
    assert ready.vars["channel_id"] == str(fake.channel_id)
    assert content(ready).startswith(f"Persona {name} is ready (sweet; mix sweet/")
    assert [f.filename for f in ready.files] == [f"persona-{name}.png"]
    assert not custom_ids(ready) and not fake.reactions.get(int(ready.response["id"]))
    persona = await studio.store.find_persona((await studio.owner(fake)).id, name)
    assert persona is not None and persona.status == "ready" and persona.reference_key
    assert ready.files[0].data == studio.app.blobs.get(persona.reference_key)
    return persona


async def ready_persona(fake: FakeDiscord, studio: Studio, name: str = "mia") -> Persona:
    """A ready persona made straight in storage (``/persona create`` itself is covered once, above):
    saves the portrait job in tests about something else."""
    owner = await studio.owner(fake)
    mix = studio.engine.draw_mix("sweet", 7)
    guild = await studio.store.workspace("discord", str(fake.guild_id))  # the server's workspace
    persona = await studio.store.create_persona(owner.id, name, "sweet", mix, 7, workspace_id=guild.id)
    await studio.store.persona_ready(persona.id, None, None, mix)
    return persona


async def open_post(
    fake: FakeDiscord, studio: Studio, *, persona: str = "mia", prompt: str = "holding a latte on a terrace", count: int
) -> tuple[Thread, RecordedRequest]:
    """``/post`` in #general: the post message, its thread, the first result in the thread."""
    mark = fake.mark()
    interaction = await fake.send_interaction(
        fake.slash_command("post", {"persona": persona, "prompt": prompt, "count": count})
    )
    created = await fake.wait_request(route="create_thread_from_message", since=mark)
    thread_id = int(created.response["id"])
    # The thread starts from the post message: the command's own (public) response.
    assert thread_id == interaction.original_message_id and created.vars["channel_id"] == str(fake.channel_id)
    post_message = fake.messages[thread_id]
    assert post_message["content"].startswith("📸 Post #") and prompt in post_message["content"]
    result = await wait_result(fake, thread_id, since=mark, text="Generate #")
    thread = await studio.store.find_thread("discord", thread_id)
    assert thread is not None and thread.channel_id == fake.channel_id
    return thread, result


async def reload_thread(studio: Studio, thread: Thread) -> Thread:
    return await studio.store.get_thread(thread.id)


def result_messages_for(fake: FakeDiscord, job_text: str) -> list[RecordedRequest]:
    return [r for r in fake.requests_for("create_message") if r.status == 200 and content(r).startswith(job_text)]


async def assert_each_result_delivered_once(fake: FakeDiscord, studio: Studio) -> None:
    """Every finished job of the owner was delivered, by exactly one message."""
    # waits for sends still in flight (each holds its post's delivery lock) and sends nothing new
    assert await studio.app.conversation.deliver_pending("discord") == 0
    jobs = await studio.jobs(fake)
    assert jobs
    for job in jobs:
        assert job.status == "done" and job.delivered, (job.id, job.kind, job.status, job.error)
        if job.kind == "create_persona":
            persona = await studio.store.get_persona(int(job.spec["persona"]["persona_id"]))
            sent = result_messages_for(fake, f"Persona {persona.name} is ready")
        else:
            turn = await studio.store.turn_for_job(job.id)
            assert turn is not None
            sent = result_messages_for(fake, f"{turn.kind.capitalize()} #{turn.id}: ")
            assert [turn_of(r) for r in sent] == [turn.id]
        assert len(sent) == 1, (job.kind, [content(r) for r in sent])


def track_handler(bot: PersonaBot, name: str) -> Callable[[int], Awaitable[None]]:
    """Wrap one of the bot's event handlers; the returned coroutine waits for ``n`` of its returns."""
    handler = getattr(bot, name)
    done = 0
    finished = asyncio.Condition()

    async def wrapped(*args: Any) -> None:
        nonlocal done
        try:
            await handler(*args)
        finally:
            async with finished:
                done += 1
                finished.notify_all()

    setattr(bot, name, wrapped)  # discord.py looks handlers up on the instance at dispatch time

    async def wait(count: int) -> None:
        async with finished:
            await asyncio.wait_for(finished.wait_for(lambda: done >= count), 10)

    return wait


def blob_files(studio: Studio) -> list[str]:
    return sorted(str(p) for p in Path(studio.app.settings.blob_dir).rglob("*"))


def png_header(width: int, height: int) -> bytes:
    """A PNG that is only a signature, an IHDR claiming ``width`` x ``height`` and IEND."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


# -- 1 + 4: a whole post conversation, each result delivered once --------------------------------


async def test_a_whole_post_conversation(studio: Studio, fake: FakeDiscord, start_bot: StartBot) -> None:
    await start_bot(studio.app.conversation)
    persona = await create_persona(fake, studio)

    # One status message for the persona job, in the channel, finally "Done".
    statuses = [
        r
        for r in fake.requests_for("create_message")
        if r.vars["channel_id"] == str(fake.channel_id) and content(r).startswith(("⏳", "🎨"))
    ]
    assert len(statuses) == 1
    assert fake.messages[int(statuses[0].response["id"])]["content"].startswith("✅ Done")

    # /persona show: a card only the asker sees (the persona's portrait, ephemeral).
    mark = fake.mark()
    show = await fake.send_interaction(fake.slash_command("persona", {"name": "mia"}, subcommand="show"))
    card = await fake.wait_request(route="followup", since=mark)
    assert card.json["flags"] & MESSAGE_FLAG_EPHEMERAL and card.response["flags"] & MESSAGE_FLAG_EPHEMERAL
    assert content(card).startswith(f"mia — sweet, seed {persona.seed}, ready")
    assert [f.filename for f in card.files] == ["persona-mia.png"]
    assert show.original_message_id not in fake.messages  # the public "thinking" message is gone
    assert not fake.requests_for("create_message", since=mark)

    # /post count=2: the post message, a thread from it, two images with four buttons and reactions.
    thread, first = await open_post(fake, studio, count=2)
    thread_id = int(first.vars["channel_id"])
    generate = turn_of(first)
    assert thread.current_turn_id == generate
    turn = await studio.store.get_turn(generate)
    assert (turn.kind, turn.parent_id, turn.status, len(turn.image_keys)) == ("generate", None, "done", 2)
    assert [f.filename for f in first.files] == [
        f"post{thread.id}-turn{generate}-1.png",
        f"post{thread.id}-turn{generate}-2.png",
    ]
    assert [f.data for f in first.files] == [studio.app.blobs.get(key) for key in turn.image_keys]
    assert content(first).startswith(f"Generate #{generate}: first images · ")
    assert "\n1. image 1 · identity" in content(first) and "\n2. image 2 · identity" in content(first)
    labels = [c["label"] for row in first.json["components"] for c in row["components"]]
    assert labels == ["Approve", "Regenerate", "Undo", "Cancel"]

    # A plain message of the owner in the thread is an edit of the current image.
    mark = fake.mark()
    instruction = await fake.user_message(thread_id, "hold the latte higher")
    ack = await fake.wait_request(lambda r: "✏️" in content(r), route="create_message", since=mark)
    assert ack.vars["channel_id"] == str(thread_id)
    assert content(ack) == "✏️ hold the latte higher (image 1)"
    assert str(ack.json["message_reference"]["message_id"]) == instruction["id"]
    edited = await wait_result(fake, thread_id, since=mark, text="Edit #")
    edit = turn_of(edited)
    assert content(edited).startswith(f"Edit #{edit}: hold the latte higher · ")
    turn = await studio.store.get_turn(edit)
    assert (turn.kind, turn.parent_id, turn.instruction, len(turn.image_keys)) == (
        "edit",
        generate,
        "hold the latte higher",
        2,
    )
    generated = await studio.store.get_turn(generate)
    assert turn.image_keys[1] == generated.image_keys[1]  # only image 1 was edited
    assert (await reload_thread(studio, thread)).current_turn_id == edit

    # ✅ by the owner (a reaction) approves the turn the result shows.
    edit_message = int(edited.response["id"])
    mark = fake.mark()
    await fake.user_react(thread_id, edit_message, "✅")
    approved = await fake.wait_request(lambda r: "Approved" in content(r), route="create_message", since=mark)
    assert content(approved).startswith(f"✅ Approved turn #{edit}.") and approved.vars["channel_id"] == str(thread_id)
    assert (await studio.store.get_turn(edit)).approved
    assert (await reload_thread(studio, thread)).status == "approved"

    # 🔁 (a button) renders the same turn again with a new seed: a sibling of the edit.
    mark = fake.mark()
    click = await fake.send_interaction(fake.component_click(edit_message, f"persona:regen:{edit}"))
    assert (await fake.wait_callback(click)).json == {"type": CALLBACK_DEFERRED_UPDATE_MESSAGE}
    again = await fake.wait_request(route="followup", since=mark)
    assert content(again) == "🔁 Again with a new seed: hold the latte higher"
    assert not again.json.get("flags")  # public, in the thread
    regenerated = await wait_result(fake, thread_id, since=mark, text="Regenerate #")
    regen = turn_of(regenerated)
    turn = await studio.store.get_turn(regen)
    assert (turn.kind, turn.parent_id, turn.instruction) == ("regenerate", generate, "hold the latte higher")
    assert turn.seed != (await studio.store.get_turn(edit)).seed
    assert (await reload_thread(studio, thread)).current_turn_id == regen

    # ↩️ (a button on the newest result) undoes the regenerate: back to the result it replaced.
    mark = fake.mark()
    click = await fake.send_interaction(fake.component_click(int(regenerated.response["id"]), f"persona:undo:{regen}"))
    assert (await fake.wait_callback(click)).json == {"type": CALLBACK_DEFERRED_UPDATE_MESSAGE}
    back = await wait_result(fake, thread_id, since=mark, text="↩️ Back to turn")
    assert turn_of(back) == edit and content(back).startswith(f"↩️ Back to turn #{edit} ")
    edited = await studio.store.get_turn(edit)
    assert [f.data for f in back.files] == [studio.app.blobs.get(key) for key in edited.image_keys]
    assert (await reload_thread(studio, thread)).current_turn_id == edit
    # ↩️ again goes back to the first images
    mark = fake.mark()
    click = await fake.send_interaction(fake.component_click(int(back.response["id"]), f"persona:undo:{edit}"))
    back = await wait_result(fake, thread_id, since=mark, text="↩️ Back to turn")
    assert turn_of(back) == generate
    assert [f.data for f in back.files] == [studio.app.blobs.get(key) for key in generated.image_keys]
    assert (await reload_thread(studio, thread)).current_turn_id == generate

    # /history in the thread: the turn tree, public, in place of the thinking message.
    mark = fake.mark()
    history = await fake.send_interaction(fake.slash_command("history", channel_id=thread_id))
    tree = await fake.wait_request(route="webhook_edit", since=mark)
    lines = content(tree).splitlines()
    assert lines[0] == f"Post #{thread.id}: holding a latte on a terrace"
    assert lines[1].startswith(f"▶ #{generate} generate: holding a latte on a terrace — identity")
    assert lines[2].startswith(f"     #{edit} edit: hold the latte higher") and lines[2].endswith("✅")
    assert lines[3].startswith(f"     #{regen} regenerate: hold the latte higher")
    assert fake.messages[history.original_message_id or 0]["channel_id"] == str(thread_id)

    # /export: a zip with the approved turn's images and manifest.json, posted in the thread.
    mark = fake.mark()
    await fake.send_interaction(fake.slash_command("export", channel_id=thread_id))
    sent = await fake.wait_request(lambda r: bool(r.files), route="create_message", since=mark)
    assert sent.vars["channel_id"] == str(thread_id)
    assert content(sent) == f"📦 Post #{thread.id}: 1 approved turn(s) and manifest.json"
    assert [f.filename for f in sent.files] == [f"post-{thread.id}.zip"]
    with zipfile.ZipFile(io.BytesIO(sent.files[0].data)) as archive:
        names = sorted(archive.namelist())
        manifest = json.loads(archive.read("manifest.json"))
        edit_images = [archive.read(f"images/turn{edit}-{i}.png") for i in (1, 2)]
    assert names == [f"images/turn{edit}-1.png", f"images/turn{edit}-2.png", "manifest.json"]
    edited_turn = await studio.store.get_turn(edit)
    assert edit_images == [studio.app.blobs.get(key) for key in edited_turn.image_keys]
    assert manifest["post"] == thread.id and manifest["current_turn"] == generate
    assert manifest["persona"]["name"] == "mia" and manifest["persona"]["seed"] == persona.seed
    by_id = {t["id"]: t for t in manifest["turns"]}
    assert set(by_id) == {generate, edit, regen}
    assert [by_id[t]["approved"] for t in (generate, edit, regen)] == [False, True, False]
    assert by_id[edit]["parent"] == generate and by_id[regen]["parent"] == generate
    await fake.wait_request(route="webhook_delete", since=mark)  # no stray thinking message

    # 4. Every job's result reached Discord exactly once (the delivery sweep ran meanwhile).
    await assert_each_result_delivered_once(fake, studio)
    assert len(await studio.jobs(fake)) == 4  # persona, generate, edit, regenerate


# -- 2: owner only --------------------------------------------------------------------------------


async def test_strangers_change_nothing(studio: Studio, fake: FakeDiscord, start_bot: StartBot) -> None:
    bot = await start_bot(studio.app.conversation)
    messages_handled = track_handler(bot, "on_message")
    await ready_persona(fake, studio)
    thread, result = await open_post(fake, studio, count=1)
    thread_id, result_id, turn = thread.thread_id or 0, int(result.response["id"]), turn_of(result)
    jobs_before = len(await studio.jobs(fake))
    turns_before = [t.id for t in await studio.store.turns(thread.id)]

    # A stranger's ✅ reaction: removed, a short notice mentions them, nothing is approved.
    mark = fake.mark()
    await fake.user_react(thread_id, result_id, "✅", user=fake.stranger)
    removed = await fake.wait_request(route="remove_reaction", since=mark)
    assert removed.vars["user_id"] == fake.stranger["id"] and removed.vars["emoji"] == "✅"
    notice = await fake.wait_request(route="create_message", since=mark)
    assert content(notice) == (
        f"<@{fake.stranger['id']}> only <@{fake.owner['id']}> can act on the results of this post."
    )
    assert fake.reaction_users(result_id, "✅") == [fake.application_id]

    # A stranger's buttons: an ephemeral refusal each, no job, no approval.
    for action in ("approve", "regen", "undo"):
        mark = fake.mark()
        click = await fake.send_interaction(
            fake.component_click(result_id, f"persona:{action}:{turn}", user=fake.stranger)
        )
        assert (await fake.wait_callback(click)).json == {"type": CALLBACK_DEFERRED_UPDATE_MESSAGE}
        refusal = await fake.wait_request(route="followup", since=mark)
        assert refusal.json["flags"] & MESSAGE_FLAG_EPHEMERAL
        assert content(refusal) == f"Only <@{fake.owner['id']}> can use the buttons of this post."

    # A stranger's slash command in the thread: the commands layer refuses it, privately.
    mark = fake.mark()
    await fake.send_interaction(fake.slash_command("approve", user=fake.stranger, channel_id=thread_id))
    refusal = await fake.wait_request(route="followup", since=mark)
    assert refusal.json["flags"] & MESSAGE_FLAG_EPHEMERAL
    assert content(refusal).startswith("⚠️ Only the author of this post (or an admin) can change it.")

    # A stranger's plain message in the thread is conversation, not an instruction.
    mark = fake.mark()
    await fake.user_message(thread_id, "make it night", user=fake.stranger)
    await messages_handled(1)
    assert not [r for r in fake.requests[mark:] if r.method != "GET"]

    # Storage is as the owner left it.
    assert not (await studio.store.get_turn(turn)).approved
    after = await reload_thread(studio, thread)
    assert (after.current_turn_id, after.status) == (turn, "open")
    assert [t.id for t in await studio.store.turns(thread.id)] == turns_before
    assert len(await studio.jobs(fake)) == jobs_before
    stranger = await studio.store.user("discord", fake.stranger["id"])
    assert await studio.store.user_jobs(stranger.id, unfinished_only=False) == []

    # The owner's own message still is an edit (the refusals did not break the thread).
    mark = fake.mark()
    await fake.user_message(thread_id, "make it night")
    await wait_result(fake, thread_id, since=mark, text="Edit #")
    await assert_each_result_delivered_once(fake, studio)


# -- 3 + 4: restarts --------------------------------------------------------------------------------


async def test_old_buttons_work_after_a_restart(studio: Studio, fake: FakeDiscord, start_bot: StartBot) -> None:
    first = await start_bot(studio.app.conversation)
    await ready_persona(fake, studio)
    thread, result = await open_post(fake, studio, count=1)
    thread_id, result_id, generate = thread.thread_id or 0, int(result.response["id"]), turn_of(result)
    await first.close()

    # A new process: a new client on the same app and database, with no memory of the result.
    second = await start_bot(studio.app.conversation)
    assert second is not first and not second._turns

    # ✅ as a reaction on the old result: the new client reads the turn from the message's buttons.
    mark = fake.mark()
    await fake.user_react(thread_id, result_id, "✅")
    approved = await fake.wait_request(lambda r: "Approved" in content(r), route="create_message", since=mark)
    assert content(approved).startswith(f"✅ Approved turn #{generate}.")
    assert approved.vars["channel_id"] == str(thread_id)
    assert [r.vars["message_id"] for r in fake.requests_for("get_message", since=mark)] == [str(result_id)]
    assert (await studio.store.get_turn(generate)).approved

    # 🔁 as a button on the old result: a new job, rendered and delivered through the new client.
    mark = fake.mark()
    click = await fake.send_interaction(fake.component_click(result_id, f"persona:regen:{generate}"))
    assert (await fake.wait_callback(click)).json == {"type": CALLBACK_DEFERRED_UPDATE_MESSAGE}
    again = await fake.wait_request(route="followup", since=mark)
    assert content(again) == "🔁 Again with a new seed: holding a latte on a terrace"
    regenerated = await wait_result(fake, thread_id, since=mark, text="Regenerate #")
    regen = turn_of(regenerated)
    turn = await studio.store.get_turn(regen)
    assert (turn.kind, turn.parent_id, turn.status) == ("regenerate", None, "done")
    assert (await reload_thread(studio, thread)).current_turn_id == regen
    await assert_each_result_delivered_once(fake, studio)


async def test_a_post_right_after_persona_create_waits_for_the_persona(
    studio: Studio, fake: FakeDiscord, start_bot: StartBot
) -> None:
    """`/persona create` and at once `/post`: no retry, the post starts when the portrait exists."""
    await start_bot(studio.app.conversation)
    studio.engine.gate.clear()  # the portrait job waits in the engine
    mark = fake.mark()
    await fake.send_interaction(
        fake.slash_command("persona", {"archetype": "sweet", "name": "mia"}, subcommand="create")
    )
    await fake.wait_request(lambda r: content(r).startswith("Creating persona mia"), route="webhook_edit", since=mark)
    await fake.send_interaction(fake.slash_command("post", {"persona": "mia", "prompt": "a latte", "count": 1}))
    created = await fake.wait_request(route="create_thread_from_message", since=mark)
    thread_id = int(created.response["id"])
    assert "still being created" in fake.messages[thread_id]["content"]
    assert not [r for r in fake.requests[mark:] if "⚠️" in content(r)]  # no error, no retry asked
    post_jobs = [j for j in await studio.jobs(fake) if j.kind == "generate"]
    assert [j.status for j in post_jobs] == ["held"]

    studio.engine.gate.set()
    result = await wait_result(fake, thread_id, since=mark, text="Generate #")
    persona = await studio.store.find_persona((await studio.owner(fake)).id, "mia")
    job = await studio.store.get_job(post_jobs[0].id)
    assert job.spec["persona"]["reference_key"] == persona.reference_key is not None
    assert turn_of(result) == (await studio.store.turn_for_job(job.id)).id
    await assert_each_result_delivered_once(fake, studio)


async def test_a_result_finished_while_the_bot_was_away_is_delivered_once(
    studio: Studio, fake: FakeDiscord, start_bot: StartBot
) -> None:
    first = await start_bot(studio.app.conversation)
    await ready_persona(fake, studio)
    thread, _ = await open_post(fake, studio, count=1)
    thread_id = thread.thread_id or 0

    studio.engine.gate.clear()  # the next job waits in the engine until the bot is gone
    mark = fake.mark()
    await fake.user_message(thread_id, "now on the beach")
    await fake.wait_request(lambda r: content(r).startswith("✏️"), route="create_message", since=mark)
    [job] = [j for j in await studio.jobs(fake) if j.kind == "edit"]
    await first.close()
    with pytest.raises(RuntimeError, match="closed"):  # at once, not after waiting for a READY
        await first.deliver([])
    studio.engine.gate.set()
    finished = await studio.wait_job_finished(job.id)
    assert finished.status == "done"

    # The stopped client could not take it (it failed at once, so the delivery was released) ...
    mark = fake.mark()
    await start_bot(studio.app.conversation)
    # ... the next one delivers it, once: at READY (deliver_pending) or in the sweep, not both.
    turn = await studio.store.turn_for_job(job.id)
    assert turn is not None
    delivered = await wait_result(fake, thread_id, since=mark, text=f"Edit #{turn.id}: now on the beach")
    assert turn_of(delivered) == turn.id
    assert (await reload_thread(studio, thread)).current_turn_id == turn.id
    # A later sweep finds nothing left to deliver.
    assert await studio.app.conversation.deliver_pending("discord") == 0
    await assert_each_result_delivered_once(fake, studio)


# -- 5: bad attachments ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "data", "message"),
    [
        ("truncated.png", png_bytes(64, 64, noise=True)[:-200], "'truncated.png' is corrupt or truncated"),
        (
            "junk.png",
            b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
            "'junk.png' is not a readable image (PNG, JPEG or WebP)",
        ),
        ("bomb.png", png_header(100_000, 100_000), "'bomb.png' is too large in pixels (a decompression bomb?)"),
        ("huge.png", png_header(8000, 6000), "'huge.png' is 8000x6000 (48 MP); at most 40 megapixels"),
    ],
    ids=["truncated", "junk", "bomb", "over-40MP"],
)
async def test_a_bad_scene_image_gets_a_private_error_and_stores_nothing(
    studio: Studio, fake: FakeDiscord, start_bot: StartBot, filename: str, data: bytes, message: str
) -> None:
    await start_bot(studio.app.conversation)
    owner = await studio.owner(fake)
    await ready_persona(fake, studio)
    blobs_before = blob_files(studio)

    scene = fake.add_cdn_file(filename, data, "image/png")
    mark = fake.mark()
    interaction = await fake.send_interaction(
        fake.slash_command("post", {"persona": "mia", "prompt": "on the beach", "count": 2, "scene": scene})
    )
    answer = await fake.wait_request(route="followup", since=mark)
    assert answer.json["flags"] & MESSAGE_FLAG_EPHEMERAL and answer.response["flags"] & MESSAGE_FLAG_EPHEMERAL
    assert content(answer) == f"⚠️ {message}"  # the file name exactly as sent
    assert interaction.original_message_id not in fake.messages  # nobody else saw anything
    assert not [m for m in fake.channel_messages(fake.channel_id) if m["content"] or m["attachments"]]
    assert not fake.requests_for("create_thread_from_message") and fake.threads() == []
    # Nothing stored: no thread row, no job, no blob.
    assert await studio.store.list_threads(owner.id) == []
    assert await studio.store.user_jobs(owner.id, unfinished_only=False) == []
    assert blob_files(studio) == blobs_before
