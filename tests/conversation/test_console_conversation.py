"""The whole conversation through the console front end, tiny engine, embedded queue."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

from bot.app import App
from bot.console import ConsoleFrontEnd
from commands.events import FileOut, Images, OpenThread
from storage.models import JobStatus, TurnStatus
from tests.conversation.helpers import errors, job_spec, queued, run, texts


async def _post(app: App, console: ConsoleFrontEnd, count: int = 2) -> int:
    await run(console, "/persona create sweet Mia")
    await run(console, f"/post Mia count={count} sipping a latte in a café")
    user = await app.store.user("console", "ann")
    assert user.current_thread_id is not None
    return user.current_thread_id


async def test_persona_create_draws_a_mix_and_stores_the_portrait(app: App, console: ConsoleFrontEnd) -> None:
    actions = await run(console, "/persona create sweet Mia")
    assert len(queued(actions)) == 1
    owner = await app.store.user("console", "ann")
    persona = await app.store.find_persona(owner.id, "Mia")
    assert persona is not None and persona.status == "ready"
    assert 2 <= len(persona.lora_mix) <= 3
    assert all(name.startswith("sweet/") for name, _ in persona.lora_mix)
    assert abs(sum(weight for _, weight in persona.lora_mix) - 1.0) < 1e-6
    assert persona.reference_key and app.blobs.exists(persona.reference_key)
    delivered = [a for a in console.actions if isinstance(a, Images) and "Mia" in a.text and "ready" in a.text]
    assert len(delivered) == 1 and delivered[0].images[0].blob_key == persona.reference_key

    shown = await console.send("/persona show mia")
    assert "seed" in shown[0].text and persona.lora_mix[0][0] in shown[0].text
    assert "Mia" in texts(await console.send("/persona list"))
    assert errors(await console.send("/persona create sweet Mia"))  # duplicate name
    assert "unknown archetype" in errors(await console.send("/persona create grumpy Bob"))[0].lower()


async def test_post_edit_undo_regen_approve_export(app: App, console: ConsoleFrontEnd) -> None:
    thread_id = await _post(app, console)
    thread = await app.store.get_thread(thread_id)
    first = await app.store.get_turn(thread.current_turn_id)
    assert first.kind == "generate" and first.status == TurnStatus.DONE and len(first.image_keys) == 2
    assert len(first.identity_scores) == 2
    assert [a for a in console.actions if isinstance(a, OpenThread)]

    # a plain message edits the current image; its result becomes the next context
    await run(console, "hold the cup higher")
    edit1 = await app.store.get_turn((await app.store.get_thread(thread_id)).current_turn_id)
    assert (edit1.kind, edit1.parent_id, edit1.instruction) == ("edit", first.id, "hold the cup higher")
    assert (await job_spec(app.store, edit1))["context_keys"] == first.image_keys
    assert edit1.image_keys[1] == first.image_keys[1]  # only image 1 was edited
    assert edit1.image_keys[0] != first.image_keys[0]

    await run(console, "now on the terrace")
    edit2 = await app.store.get_turn((await app.store.get_thread(thread_id)).current_turn_id)
    assert edit2.parent_id == edit1.id and (await job_spec(app.store, edit2))["context_keys"] == edit1.image_keys

    # undo goes back to the parent; the next edit branches from there
    undo = await console.send("/undo")
    assert (await app.store.get_thread(thread_id)).current_turn_id == edit1.id
    assert isinstance(undo[0], Images) and undo[0].turn_id == edit1.id
    await run(console, "all: make it golden hour")
    branch = await app.store.get_turn((await app.store.get_thread(thread_id)).current_turn_id)
    assert branch.parent_id == edit1.id and (await job_spec(app.store, branch))["targets"] == [0, 1]
    assert all(new != old for new, old in zip(branch.image_keys, edit1.image_keys, strict=True))
    siblings = [t.id for t in await app.store.turns(thread_id) if t.parent_id == edit1.id]
    assert siblings == [edit2.id, branch.id]  # nothing overwritten

    # regenerate: same instruction and parent, a new seed
    await run(console, "/regen")
    regen = await app.store.get_turn((await app.store.get_thread(thread_id)).current_turn_id)
    assert (regen.kind, regen.parent_id, regen.instruction) == ("regenerate", edit1.id, "make it golden hour")
    assert regen.seed != branch.seed and regen.image_keys != branch.image_keys

    await run(console, "✅")
    assert (await app.store.get_turn(regen.id)).approved
    history = texts(await console.send("/history"))
    assert "▶" in history and "make it golden hour" in history and history.count("#") >= 6

    exported = await console.send("/export")
    file = next(a for a in exported if isinstance(a, FileOut))
    with zipfile.ZipFile(io.BytesIO(file.data)) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        names = archive.namelist()
        assert archive.read(f"images/turn{regen.id}-1.png") == app.blobs.get(regen.image_keys[0])
    assert sorted(n for n in names if n.startswith("images/")) == [
        f"images/turn{regen.id}-1.png",
        f"images/turn{regen.id}-2.png",
    ]
    assert [t["id"] for t in manifest["turns"]] == [first.id, edit1.id, edit2.id, branch.id, regen.id]
    turn = manifest["turns"][-1]
    assert turn["approved"] and turn["seed"] == regen.seed and turn["instruction"] == "make it golden hour"
    assert turn["parameters"]["steps"] == 4 and len(turn["identity_scores"]) == 2
    assert (console.out_dir / file.filename).read_bytes() == file.data

    # every job delivered exactly once
    owner = await app.store.user("console", "ann")
    done_jobs = await app.store.user_jobs(owner.id, unfinished_only=False)
    assert all(j.status == JobStatus.DONE and j.delivered for j in done_jobs)
    result_turns = [a.turn_id for a in console.actions if isinstance(a, Images) and a.job_id]
    assert len(result_turns) == len(set(result_turns))


async def test_edit_one_image_by_number_and_settings(app: App, console: ConsoleFrontEnd) -> None:
    thread_id = await _post(app, console)
    reply = await console.send("/settings post steps=3 size=48x32")
    assert "steps=3" in reply[0].text and "size=48x32" in reply[0].text
    await run(console, "#2 add sunglasses")
    turn = await app.store.get_turn((await app.store.get_thread(thread_id)).current_turn_id)
    assert (await job_spec(app.store, turn))["targets"] == [1] and turn.params["steps"] == 3
    first = await app.store.get_turn(turn.parent_id)
    assert turn.image_keys[0] == first.image_keys[0] and turn.image_keys[1] != first.image_keys[1]
    edited = app.blobs.info(turn.image_keys[1])
    assert edited.width == edited.height  # an edit keeps the (square) context's aspect, not 48x32
    assert errors(await console.send("#7 nope"))
    assert (await app.store.get_thread(thread_id)).settings == {"steps": 3, "width": 48, "height": 32}
    assert "steps=4" in (await console.send("/settings"))[0].text  # the user's defaults are untouched
    assert errors(await console.send("/settings steps=500"))
    assert "0 to 4294967295" in errors(await console.send("/settings seed=99999999999999999999"))[0]
    assert errors(await console.send("/settings colour=blue"))


async def test_fixed_seed_reproduces_the_same_image(app: App, console: ConsoleFrontEnd) -> None:
    await run(console, "/persona create elegant Zoe")
    await console.send("/settings seed=1234")
    await run(console, "/post Zoe a red dress")
    await run(console, "/post Zoe a red dress")
    owner = await app.store.user("console", "ann")
    threads = await app.store.list_threads(owner.id)
    images = [(await app.store.get_turn(t.current_turn_id)).image_keys for t in threads]
    assert images[0] == images[1]
    await console.send("/settings seed=random")
    await run(console, "/post Zoe a red dress")
    latest = (await app.store.list_threads(owner.id))[0]
    assert (await app.store.get_turn(latest.current_turn_id)).image_keys != images[0]


async def test_status_help_and_thread_switching(app: App, console: ConsoleFrontEnd) -> None:
    assert "/persona create" in texts(await console.send("/help"))
    assert "No jobs" in texts(await console.send("/status"))
    first = await _post(app, console, count=1)
    await run(console, "/post Mia count=1 at the beach")
    second = (await app.store.user("console", "ann")).current_thread_id
    assert second != first
    listing = texts(await console.send("/threads"))
    assert f"#{first}" in listing and f"#{second}" in listing
    await console.send(f"/thread {first}")
    assert (await app.store.user("console", "ann")).current_thread_id == first
    await run(console, "wave at the camera")
    assert (await app.store.get_thread(first)).current_turn_id != (await app.store.get_thread(second)).current_turn_id
    assert errors(await console.send("/frobnicate"))


async def test_undo_of_a_regenerated_result_returns_to_what_it_replaced(app: App, console: ConsoleFrontEnd) -> None:
    thread_id = await _post(app, console, count=1)
    first = (await app.store.get_thread(thread_id)).current_turn_id
    await run(console, "/regen")  # regenerate the first images: a second root turn
    regen = (await app.store.get_thread(thread_id)).current_turn_id
    assert (await app.store.get_turn(regen)).parent_id is None
    undone = await console.send("/undo")
    assert isinstance(undone[0], Images) and undone[0].turn_id == first
    assert (await app.store.get_thread(thread_id)).current_turn_id == first
    assert errors(await console.send("/undo"))  # nothing before the first result


async def _discord_post_without_thread(app: App) -> tuple[Any, OpenThread]:
    """A Discord /post whose thread the front end has not opened: its job is held."""
    from commands.events import Event, EventKind

    discord_user = await app.store.user("discord", "ann")
    persona = await app.store.create_persona(discord_user.id, "Mia", "sweet", [("sweet/a", 1.0)], seed=1)
    await app.store.persona_ready(persona.id, None, None)
    actions = await app.conversation.handle(
        Event(
            platform="discord",
            user_id="ann",
            kind=EventKind.COMMAND,
            command="post",
            options={"persona": "Mia", "prompt": "a latte"},
            channel_id=42,
        )
    )
    return discord_user, next(a for a in actions if isinstance(a, OpenThread))


async def test_abandoning_a_post_whose_thread_could_not_open(app: App) -> None:
    # a Discord /post whose thread the front end failed to create: its job waits for bind_thread
    discord_user, opened = await _discord_post_without_thread(app)
    assert len(await app.store.user_jobs(discord_user.id)) == 1
    await app.conversation.abandon_thread(opened.where.thread_db_id)
    assert await app.store.user_jobs(discord_user.id) == []  # no longer counts against the limit
    thread = await app.store.get_thread(opened.where.thread_db_id)
    assert thread.status == "cancelled"
    assert await app.store.undelivered_jobs("discord") == []


async def test_a_post_left_without_its_thread_is_closed_on_the_next_start(
    app: App, tmp_path: Any, shared_dirs: Any, tiny_engine: Any
) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from bot.app import build_app
    from storage.models import Job, utcnow
    from tests.conversation.conftest import app_settings

    discord_user, opened = await _discord_post_without_thread(app)
    (job,) = await app.store.user_jobs(discord_user.id)
    assert job.status == "held"
    async with app.db.session() as s:  # the front end died 20 minutes ago, before opening the thread
        await s.execute(update(Job).where(Job.id == job.id).values(created_at=utcnow() - timedelta(minutes=20)))
    restarted = await build_app(app_settings(tmp_path, shared_dirs), engine=tiny_engine)
    try:
        assert (await restarted.store.get_job(job.id)).status == "cancelled"
        assert (await restarted.store.get_thread(opened.where.thread_db_id)).status == "cancelled"
        assert await restarted.store.user_jobs(discord_user.id) == []
    finally:
        await restarted.close()


async def test_identity_scores_line_up_with_the_posts_images(app: App, console: ConsoleFrontEnd) -> None:
    thread_id = await _post(app, console, count=2)
    first = await app.store.get_turn((await app.store.get_thread(thread_id)).current_turn_id)
    await run(console, "#2 add a hat")
    edit = await app.store.get_turn((await app.store.get_thread(thread_id)).current_turn_id)
    assert len(edit.identity_scores) == len(edit.image_keys) == 2
    assert edit.identity_scores[0] == first.identity_scores[0]  # image 1 unchanged, its score kept
