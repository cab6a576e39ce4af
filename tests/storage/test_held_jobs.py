"""Jobs held for a persona that is still being created: found by persona, not released with their
thread until the persona is ready, released one by one with a refreshed spec."""

from __future__ import annotations

from typing import Any

from storage.models import JobStatus
from storage.repository import Store


def _spec(job_id: str, persona_id: int, **persona: Any) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "kind": "generate",
        "persona": {"persona_id": persona_id, "archetype": "sweet", **persona},
    }


async def test_held_jobs_wait_for_their_persona(store: Store) -> None:
    owner = await store.user("console", "ann")
    pending = await store.create_persona(owner.id, "Mia", "sweet", [], seed=1)
    ready = await store.create_persona(owner.id, "Zoe", "boss", [], seed=2)
    await store.persona_ready(ready.id, "ab" * 32, [0.5])
    threads = []
    for persona in (pending, ready):
        thread = await store.create_thread(
            platform="console", owner_id=owner.id, persona_id=persona.id, title="t", prompt="p"
        )
        threads.append(thread.id)
    for name, persona, thread_id in (("a", pending, threads[0]), ("b", ready, threads[1]), ("c", pending, threads[0])):
        await store.create_job(
            name,
            "generate",
            _spec(name, persona.id),
            user_id=owner.id,
            thread_id=thread_id,
            platform="console",
            status=JobStatus.HELD,
        )
    await store.create_job(  # queued, not held: never listed
        "d", "generate", _spec("d", pending.id), user_id=owner.id, thread_id=threads[0], platform="console"
    )

    assert [job.id for job in await store.held_jobs_for_persona(pending.id)] == ["a", "c"]
    assert [job.id for job in await store.held_jobs_for_persona(ready.id)] == ["b"]

    # the threads exist: the ready persona's job goes, the pending persona's jobs stay held
    assert await store.release_held(threads[0]) == []
    assert [job.id for job in await store.release_held(threads[1])] == ["b"]
    assert (await store.get_job("a")).status == JobStatus.HELD
    assert (await store.get_job("b")).status == JobStatus.QUEUED

    # the persona is ready: its jobs get the fresh persona in their spec and are released
    await store.persona_ready(pending.id, "cd" * 32, [0.25])
    for job in await store.held_jobs_for_persona(pending.id):
        await store.set_job_spec(job.id, _spec(job.id, pending.id, reference_key="cd" * 32))
    released = await store.release_held(threads[0])
    assert [job.id for job in released] == ["a", "c"] and {job.status for job in released} == {JobStatus.QUEUED}
    assert await store.release_held(threads[0]) == []  # no longer held
    assert (await store.get_job("c")).spec["persona"]["reference_key"] == "cd" * 32
    assert await store.held_jobs_for_persona(pending.id) == []


async def test_release_held_still_releases_jobs_without_a_persona(store: Store) -> None:
    owner = await store.user("console", "bo")
    persona = await store.create_persona(owner.id, "Ivy", "sweet", [], seed=3)
    await store.persona_ready(persona.id, None, None)
    thread = await store.create_thread(
        platform="discord", owner_id=owner.id, persona_id=persona.id, title="", prompt=""
    )
    await store.create_job(
        "x", "edit", {"job_id": "x"}, user_id=owner.id, thread_id=thread.id, platform="discord", status=JobStatus.HELD
    )
    assert [job.id for job in await store.release_held(thread.id)] == ["x"]
