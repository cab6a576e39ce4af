"""``/persona train``, ``/persona use``, ``/persona show`` and ``/cancel`` of a training job, on the
console with the real tiny engine (embedded queue)."""

from __future__ import annotations

import asyncio

import pytest

from bot.app import App
from bot.console import ConsoleFrontEnd
from commands.events import Images, Progress
from engine.jobs.events import FINISHED_STATES
from storage.models import JobStatus
from tests.conversation.helpers import errors, queued, run, texts

pytestmark = pytest.mark.usefixtures("faceless_personas")  # a reference face would filter every candidate


def _all_text(actions: list) -> str:
    return "\n".join(getattr(a, "text", "") for a in actions)


async def _trained(app: App, console: ConsoleFrontEnd) -> int:
    await run(console, "/persona create sweet Mia")
    await _faceless(app, "Mia")
    actions = await run(console, "/persona train Mia images=3 steps=4")
    assert len(queued(actions)) == 1
    owner = await app.store.user("console", "ann")
    persona = await app.store.find_persona(owner.id, "Mia")
    assert persona is not None
    return persona.id


async def _faceless(app: App, name: str) -> None:
    """The tests' premise: the tiny portrait shows no face, so training keeps candidates unchecked."""
    persona = await app.store.find_persona((await app.store.user("console", "ann")).id, name)
    assert persona is not None and persona.status == "ready" and persona.face_embedding is None


async def test_train_adds_a_version_in_use_with_its_report(app: App, console: ConsoleFrontEnd) -> None:
    persona_id = await _trained(app, console)
    persona = await app.store.get_persona(persona_id)
    assert persona.active_version == 1 and len(persona.versions) == 1
    version = persona.versions[0]
    report = version["report"]
    assert report["identity_checked"] is False  # tiny weights: the reference shows no face
    assert report["kept"] + report["rejected"] == 3 and report["kept"] >= 1
    assert report["steps"] == 4 and report["rank"] == 16 and report["loss_first"] is not None
    assert all(c["caption"].startswith(f"pst{persona_id} person, ") for c in report["candidates"])
    assert app.blobs.exists(version["lora_key"])
    assert app.blobs.get_named(f"train/{version['job_id']}/checkpoint") is None  # cleaned up

    # progress reached the chat with the loss; the result says what was kept and that identity was not checked
    running = [a for a in console.actions if isinstance(a, Progress) and a.state == "running"]
    assert any("loss" in a.text for a in running)
    assert any(a.step == a.total for a in running)
    done = [a for a in console.actions if isinstance(a, Images) and "v1" in a.text]
    assert done and "NOT checked" in done[0].text

    # a post renders with the version in use
    await run(console, "/post Mia a latte")
    job = (await app.store.user_jobs((await app.store.user("console", "ann")).id, unfinished_only=False))[0]
    posts = [j for j in await app.store.user_jobs(job.user_id, unfinished_only=False) if j.kind == "generate"]
    assert posts[0].spec["persona"]["version"] == 1
    assert posts[0].spec["persona"]["version_lora_key"] == version["lora_key"]
    assert posts[0].result["lora_mix"] == [["blob:" + version["lora_key"], 1.0]]


async def test_use_switches_versions_and_show_lists_them(app: App, console: ConsoleFrontEnd) -> None:
    persona_id = await _trained(app, console)
    shown = _all_text(await console.send("/persona show Mia"))
    assert "Versions:" in shown and "▶ v1" in shown and "  blend" in shown

    assert "blend" in texts(await console.send("/persona use Mia blend"))
    assert (await app.store.get_persona(persona_id)).active_version == 0
    assert "▶ blend" in _all_text(await console.send("/persona show Mia"))
    assert "v1" in texts(await console.send("人设 使用 Mia v1"))
    assert (await app.store.get_persona(persona_id)).active_version == 1

    assert "no version v7" in errors(await console.send("/persona use Mia v7"))[0]
    assert errors(await console.send("/persona use Mia latest"))
    assert errors(await console.send("/persona use Nobody v1"))
    assert (await app.store.get_persona(persona_id)).active_version == 1  # bad input changed nothing


async def test_bad_train_options_change_nothing(app: App, console: ConsoleFrontEnd) -> None:
    await run(console, "/persona create sweet Mia")
    for line in ("/persona train Mia steps=0", "/persona train Mia images=x", "/persona train Mia lr=1"):
        assert errors(await console.send(line)), line
    assert errors(await console.send("/persona train"))
    owner = await app.store.user("console", "ann")
    assert [j for j in await app.store.user_jobs(owner.id, unfinished_only=False) if j.kind == "train_persona"] == []


async def test_cancel_stops_a_training_job(app: App, console: ConsoleFrontEnd) -> None:
    await run(console, "/persona create sweet Mia")
    await _faceless(app, "Mia")
    events = app.conversation.queue.bus.subscribe()
    actions = await console.send("/persona train Mia images=2 steps=5000")
    (job_id,) = queued(actions)
    # wait until training itself runs (its progress carries the loss), then cancel
    async with asyncio.timeout(120):
        async for event in events:
            if event.job_id == job_id and event.state in FINISHED_STATES:
                raise AssertionError(f"the training ended before it was cancelled: {event}")
            if event.job_id == job_id and "loss" in (getattr(event, "note", None) or ""):
                break
    await events.aclose()
    assert "training" in texts(await console.send("/cancel"))
    await console.wait_job(job_id, limit_s=60)
    job = await app.store.get_job(job_id)
    assert job is not None and job.status == JobStatus.CANCELLED
    persona = await app.store.find_persona(job.user_id, "Mia")
    assert persona is not None and persona.versions == [] and persona.active_version == 0
    assert app.blobs.get_named(f"train/{job_id}/checkpoint") is None
