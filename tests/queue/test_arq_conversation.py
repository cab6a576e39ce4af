"""The whole conversation over arq: a worker (engine.jobs.worker.serve) in this process on the shared
tiny engine, the app and console front end on the same redis-server and database."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import redis.asyncio as aioredis

from bot.app import App
from commands.events import FileOut, Images, OpenThread
from engine.jobs.progress import RedisBus
from engine.jobs.queue import ArqQueue
from engine.jobs.worker import WORKER_ID
from storage.models import JobStatus
from tests.conversation.helpers import errors, job_spec, queued, run, texts
from tests.queue.conftest import Recorder, console_for


async def test_conversation_over_arq(arq_app: App, tmp_path: Path, redis_url: str) -> None:
    app = arq_app
    assert isinstance(app.conversation.queue, ArqQueue)
    assert isinstance(app.conversation.queue.bus, RedisBus)
    recorder = await Recorder(app.conversation.queue.bus).start()
    console = console_for(app, tmp_path)
    try:
        created = await run(console, "/persona create sweet Mia")
        owner = await app.store.user("console", "ann")
        persona = await app.store.find_persona(owner.id, "Mia")
        assert persona is not None and persona.status == "ready" and app.blobs.exists(persona.reference_key)
        ready = [a for a in console.actions if isinstance(a, Images) and "ready" in a.text]
        assert len(ready) == 1 and ready[0].images[0].blob_key == persona.reference_key

        # progress went worker -> redis pub/sub -> front end: queued, running steps, done
        job_id = queued(created)[0]
        states = [e.state for e in recorder.of(job_id)]
        assert states[0] == "queued" and states[-1] == "done", states
        steps = [e for e in recorder.of(job_id) if e.state == "running" and e.step]
        assert steps and steps[-1].step == steps[-1].total
        assert all(e.worker == WORKER_ID for e in recorder.of(job_id) if e.state == "running")

        await run(console, "/post Mia count=2 sipping a latte in a café")
        thread_id = (await app.store.user("console", "ann")).current_thread_id
        assert [a for a in console.actions if isinstance(a, OpenThread)]
        first = await app.store.get_turn((await app.store.get_thread(thread_id)).current_turn_id)
        assert first.kind == "generate" and len(first.image_keys) == 2

        await run(console, "hold the cup higher")
        edit1 = await app.store.get_turn((await app.store.get_thread(thread_id)).current_turn_id)
        assert (edit1.kind, edit1.parent_id) == ("edit", first.id)
        assert (await job_spec(app.store, edit1))["context_keys"] == first.image_keys
        assert edit1.image_keys[0] != first.image_keys[0]

        await run(console, "now on the terrace")
        edit2 = await app.store.get_turn((await app.store.get_thread(thread_id)).current_turn_id)
        assert edit2.parent_id == edit1.id

        undo = await console.send("/undo")
        assert (await app.store.get_thread(thread_id)).current_turn_id == edit1.id
        assert isinstance(undo[0], Images) and undo[0].turn_id == edit1.id

        await run(console, "/regen")
        regen = await app.store.get_turn((await app.store.get_thread(thread_id)).current_turn_id)
        assert (regen.kind, regen.parent_id, regen.instruction) == ("regenerate", first.id, "hold the cup higher")
        assert regen.image_keys != edit1.image_keys

        await run(console, "/approve")
        assert (await app.store.get_turn(regen.id)).approved
        assert "hold the cup higher" in texts(await console.send("/history"))

        exported = await console.send("/export")
        file = next(a for a in exported if isinstance(a, FileOut))
        with zipfile.ZipFile(io.BytesIO(file.data)) as archive:
            manifest = json.loads(archive.read("manifest.json"))
            assert archive.read(f"images/turn{regen.id}-1.png") == app.blobs.get(regen.image_keys[0])
        assert [t["id"] for t in manifest["turns"]] == [first.id, edit1.id, edit2.id, regen.id]
        assert not errors(console.actions)

        # every job done and delivered exactly once
        jobs = await app.store.user_jobs(owner.id, unfinished_only=False)
        assert len(jobs) == 5
        assert all(j.status == JobStatus.DONE and j.delivered and j.attempts == 1 for j in jobs)
        delivered = [a.job_id for a in console.actions if isinstance(a, Images) and a.job_id]
        assert sorted(delivered) == sorted(j.id for j in jobs)

        # a reader that comes late (a new connection, no subscription) still sees the final state
        client = aioredis.Redis.from_url(redis_url)
        try:
            late = RedisBus(client)
            for job in jobs:
                last = await late.last(job.id)
                assert last is not None and last.state == "done" and last.job_id == job.id
            assert await late.last("no-such-job") is None
        finally:
            await client.aclose()
    finally:
        await recorder.stop()
