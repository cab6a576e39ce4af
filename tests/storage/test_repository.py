"""Round trips of every model and walks of the turn tree, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest

from storage.models import JobStatus, ThreadStatus, TurnStatus
from storage.repository import DuplicateName, NotFound, Store

BIG_ID = 1_234_567_890_123_456_789  # a 64-bit Discord snowflake


async def test_user_is_created_once_per_platform_id(store: Store) -> None:
    first = await store.user("discord", "42", "Ann")
    again = await store.user("discord", "42")
    other_platform = await store.user("wecom", "42")
    assert first.id == again.id
    assert other_platform.id != first.id
    assert (await store.get_user(first.id)).display_name == "Ann"
    settings = await store.update_user_settings(first.id, {"steps": 8})
    settings = await store.update_user_settings(first.id, {"guidance": 3.0})
    assert settings == {"steps": 8, "guidance": 3.0}
    assert (await store.get_user(first.id)).settings == {"steps": 8, "guidance": 3.0}


async def test_persona_round_trip_unique_name_and_soft_delete(store: Store) -> None:
    owner = await store.user("console", "me")
    mix = [("sweet/a", 0.5), ("sweet/b", 0.3), ("sweet/c", 0.2)]
    persona = await store.create_persona(owner.id, "Mia", "sweet", mix, seed=2**40 + 7)
    await store.persona_ready(persona.id, "ab" * 32, [0.1, 0.2, 0.3])
    loaded = await store.get_persona(persona.id)
    assert loaded.lora_mix == [["sweet/a", 0.5], ["sweet/b", 0.3], ["sweet/c", 0.2]]
    assert loaded.seed == 2**40 + 7
    assert loaded.reference_key == "ab" * 32
    assert loaded.face_embedding == pytest.approx([0.1, 0.2, 0.3])
    assert loaded.status == "ready"
    assert (await store.find_persona(owner.id, "mia")).id == persona.id  # names match case-blind

    with pytest.raises(DuplicateName):
        await store.create_persona(owner.id, "Mia", "sweet", mix, seed=1)
    other = await store.user("console", "you")  # the console's users share the `local` workspace
    with pytest.raises(DuplicateName):
        await store.create_persona(other.id, "MIA", "boss", mix, seed=1)
    elsewhere = await store.user("discord", "7")  # another workspace may reuse the name
    await store.create_persona(elsewhere.id, "Mia", "boss", mix, seed=1)

    await store.delete_persona(persona.id)
    assert await store.find_persona(owner.id, "Mia") is None
    assert [p.name for p in await store.list_personas(owner.id)] == []
    assert (await store.get_persona(persona.id)).deleted_at is not None  # soft: the row stays
    reborn = await store.create_persona(owner.id, "Mia", "elegant", mix, seed=3)  # the name is free
    assert reborn.id != persona.id


async def test_thread_keeps_64_bit_ids_settings_and_status(store: Store) -> None:
    owner = await store.user("discord", str(BIG_ID))
    persona = await store.create_persona(owner.id, "Zoe", "boss", [("boss/a", 1.0)], seed=5)
    thread = await store.create_thread(
        platform="discord", owner_id=owner.id, persona_id=persona.id, title="latte", prompt="a latte"
    )
    await store.bind_thread(thread.id, BIG_ID - 1, BIG_ID)
    found = await store.find_thread("discord", BIG_ID)
    assert found is not None and found.id == thread.id and found.channel_id == BIG_ID - 1
    assert await store.find_thread("wecom", BIG_ID) is None
    assert await store.update_thread_settings(thread.id, {"steps": 4}) == {"steps": 4}
    await store.set_thread_status(thread.id, ThreadStatus.APPROVED)
    assert (await store.get_thread(thread.id)).status == ThreadStatus.APPROVED
    await store.set_current_thread(owner.id, thread.id)
    assert (await store.get_user(owner.id)).current_thread_id == thread.id
    with pytest.raises(NotFound):
        await store.get_thread(thread.id + 1000)


async def _thread(store: Store) -> int:
    owner = await store.user("console", "tree")
    persona = await store.create_persona(owner.id, "T", "sweet", [], seed=1)
    thread = await store.create_thread(
        platform="console", owner_id=owner.id, persona_id=persona.id, title="t", prompt="p"
    )
    return thread.id


async def test_turn_tree_undo_branch_and_history_order(store: Store) -> None:
    thread_id = await _thread(store)
    root = await store.add_turn(thread_id=thread_id, parent_id=None, kind="generate", instruction="p", seed=1)
    edit1 = await store.add_turn(thread_id=thread_id, parent_id=root.id, kind="edit", instruction="e1", seed=2)
    edit2 = await store.add_turn(thread_id=thread_id, parent_id=edit1.id, kind="edit", instruction="e2", seed=3)
    await store.set_current_turn(thread_id, edit2.id)

    # undo: the current turn moves to the parent; nothing is deleted
    current = await store.get_turn((await store.get_thread(thread_id)).current_turn_id)
    await store.set_current_turn(thread_id, current.parent_id)
    assert (await store.get_thread(thread_id)).current_turn_id == edit1.id
    # the next edit branches from edit1: edit2 stays as a sibling branch
    branch = await store.add_turn(thread_id=thread_id, parent_id=edit1.id, kind="edit", instruction="b", seed=4)
    turns = await store.turns(thread_id)
    assert [t.instruction for t in turns] == ["p", "e1", "e2", "b"]
    assert [t.id for t in turns if t.parent_id == edit1.id] == [edit2.id, branch.id]

    await store.set_approved(branch.id)
    assert [t.id for t in await store.approved_turns(thread_id)] == [branch.id]


async def test_job_lifecycle_and_exactly_once_delivery(store: Store) -> None:
    thread_id = await _thread(store)
    owner = (await store.get_thread(thread_id)).owner_id
    job = await store.create_job(
        "job-1", "edit", {"prompt": "x"}, user_id=owner, thread_id=thread_id, platform="console"
    )
    assert job.status == JobStatus.QUEUED
    turn = await store.add_turn(thread_id=thread_id, parent_id=None, kind="edit", job_id="job-1", seed=9)
    assert [j.id for j in await store.user_jobs(owner)] == ["job-1"]

    running = await store.start_job("job-1")
    assert running is not None and running.attempts == 1 and running.status == JobStatus.RUNNING
    await store.set_progress("job-1", 0.5)
    assert (await store.get_job("job-1")).progress == 0.5

    finished = await store.finish_job(
        "job-1",
        JobStatus.DONE,
        result={"image_keys": ["k"]},
        turn_update={"image_keys": ["k"], "identity_scores": [0.9]},
        make_current=True,
    )
    assert finished is True
    # a second outcome (an arq retry, a late cancel) changes nothing
    assert await store.finish_job("job-1", JobStatus.FAILED, error="late") is False
    assert await store.start_job("job-1") is None
    stored = await store.get_job("job-1")
    assert stored.status == JobStatus.DONE and stored.error is None and stored.result == {"image_keys": ["k"]}
    done_turn = await store.get_turn(turn.id)
    assert done_turn.status == TurnStatus.DONE and done_turn.image_keys == ["k"]
    assert done_turn.identity_scores == [0.9]
    assert (await store.get_thread(thread_id)).current_turn_id == turn.id
    assert await store.user_jobs(owner) == []

    assert [j.id for j in await store.undelivered_jobs("console")] == ["job-1"]
    assert await store.undelivered_jobs("discord") == []
    assert await store.claim_delivery("job-1") is True
    assert await store.claim_delivery("job-1") is False  # exactly one claimant
    await store.release_delivery("job-1")  # the send failed: claimable again
    assert await store.claim_delivery("job-1") is True
    # a claim left behind by a crashed front end can be taken over by a newer process
    claimed_at = (await store.get_job("job-1")).delivery_started_at
    assert await store.claim_delivery("job-1", reclaim_before=claimed_at) is False
    assert await store.claim_delivery("job-1", reclaim_before=claimed_at + timedelta(seconds=1)) is True
    await store.confirm_delivery("job-1")
    assert await store.undelivered_jobs("console") == []
    assert await store.claim_delivery("job-1", reclaim_before=claimed_at + timedelta(days=1)) is False


async def test_two_trainings_of_one_user_at_once_store_one(store: Store) -> None:
    """Issue 20 item 5: two /persona train at two front ends at once: the database keeps one
    (a unique partial index), whatever the commands layer checked before; other kinds and other
    users are not limited, and a finished training frees the slot."""
    import asyncio

    from storage.job_records import TrainingInProgress

    ann, bob = await store.user("wecom", "ann"), await store.user("wecom", "bob")

    async def train(job_id: str, user_id: int) -> object:
        return await store.create_job(job_id, "train_persona", {}, user_id=user_id, thread_id=None, platform="wecom")

    results = await asyncio.gather(train("t1", ann.id), train("t2", ann.id), return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["Job", "TrainingInProgress"]
    await train("t3", bob.id)  # another user
    await store.create_job("e1", "edit", {}, user_id=ann.id, thread_id=None, platform="wecom")
    kept = next(r for r in results if not isinstance(r, Exception)).id
    with pytest.raises(TrainingInProgress):
        await train("t4", ann.id)
    await store.finish_job(kept, JobStatus.CANCELLED)
    await train("t5", ann.id)


async def test_a_failed_persona_gives_its_name_to_the_next_create(store: Store) -> None:
    """Issue 20 item 12: a photo persona whose photo had no face (status failed) does not keep its
    name; a live one does."""
    owner = await store.user("wecom", "ann")
    failed = await store.create_persona(owner.id, "Mia", "photo", [], 1, photo_key="blob:photo")
    await store.create_job("j-photo", "create_persona", {}, user_id=owner.id, thread_id=None, platform="wecom")
    await store.finish_job(
        "j-photo", JobStatus.FAILED, error="no face", persona_update=(failed.id, {"status": "failed"})
    )
    again = await store.create_persona(owner.id, "mia", "sweet", [("sweet/a", 1.0)], 2)
    assert again.id != failed.id
    assert [p.id for p in await store.list_personas(owner.id)] == [again.id]
    with pytest.raises(DuplicateName):  # a live (pending or ready) persona keeps its name
        await store.create_persona(owner.id, "MIA", "sweet", [("sweet/a", 1.0)], 3)
