"""Typed progress events, finishing a job once (engine.jobs.outcomes), and per-image scores and notes
spread over a post's images by the job runner."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from engine.jobs.events import FINISHED_STATES, Cancelled, Done, Failed, Queued, Running, parse_event
from engine.jobs.outcomes import finish_job
from engine.jobs.progress import LocalBus
from engine.jobs.runner import JobRunner
from engine.specs import JobKind, JobResult, JobSpec, PersonaSpec, spread_by_targets
from storage.models import JobStatus, TurnKind
from storage.repository import Store
from tests.fakes.engine import FakeEngine


def test_each_state_has_its_class_and_round_trips_as_json() -> None:
    events = [
        Queued.build("j", position=2),
        Running.build("j", step=3, total=8, eta_s=1.5, attempt=1),
        Done.build("j", seconds=0.25),
        Failed.build("j", error="boom"),
        Cancelled.build("j"),
    ]
    for event in events:
        again = parse_event(event.model_dump_json())
        assert type(again) is type(event) and again == event
    assert parse_event({"job_id": "j", "state": "running", "ts": 1.0, "step": 2}).step == 2
    assert {e.state for e in events if e.finished} == FINISHED_STATES
    with pytest.raises(ValidationError):
        parse_event({"job_id": "j", "state": "exploded", "ts": 1.0})


def test_spread_by_targets_keeps_untouched_images() -> None:
    assert spread_by_targets([0.9], [1], [0.5, 0.6, 0.7], 3, None) == [0.5, 0.9, 0.7]
    assert spread_by_targets(["ok"], [2], [], 3, "") == ["", "", "ok"]
    assert spread_by_targets([0.1, 0.2], [1, 0], [], 2, None) == [0.2, 0.1]
    assert spread_by_targets([0.3], [5], [0.5], 2, None) == [0.5, None]  # out of range: ignored


async def _job(store: Store, kind: JobKind, *, targets: list[int] | None = None) -> tuple[JobSpec, int]:
    owner = await store.user("console", "ann")
    persona = await store.create_persona(owner.id, f"P{kind}", "sweet", [], seed=1)
    thread = await store.create_thread(
        platform="console", owner_id=owner.id, persona_id=persona.id, title="", prompt=""
    )
    spec = JobSpec(
        job_id=f"job-{kind}",
        kind=kind,
        persona=PersonaSpec(persona_id=persona.id, archetype="sweet"),
        thread_id=thread.id,
        targets=targets or [0],
    )
    return spec, thread.id


async def test_finish_job_records_the_first_outcome_only_and_fails_a_new_persona(store: Store) -> None:
    spec, _ = await _job(store, JobKind.CREATE_PERSONA)
    await store.create_job(
        spec.job_id, spec.kind, spec.model_dump(mode="json"), user_id=None, thread_id=None, platform="console"
    )
    bus = LocalBus()
    assert await finish_job(store, bus, spec.job_id, JobStatus.FAILED, error="no GPU")
    assert not await finish_job(store, bus, spec.job_id, JobStatus.CANCELLED)  # already finished
    last = await bus.last(spec.job_id)
    assert isinstance(last, Failed) and last.error == "no GPU"
    assert (await store.get_persona(spec.persona.persona_id)).status == "failed"
    with pytest.raises(ValueError):
        await finish_job(store, bus, spec.job_id, JobStatus.RUNNING)


class _Scored(FakeEngine):
    """An edit of image 2 of 3: one score and one note, in targets order."""

    def run(self, spec, on_progress=None, cancel=None) -> JobResult:  # type: ignore[no-untyped-def, override]
        keys = list(spec.context_keys)
        keys[spec.targets[0]] = "new"
        return JobResult(
            image_keys=keys, seeds=[1], identity_scores=[0.8], identity_notes=["below threshold"], tries=[2]
        )


async def test_an_edit_records_scores_and_notes_for_every_image_of_the_post(store: Store) -> None:
    spec, thread_id = await _job(store, JobKind.EDIT, targets=[1])
    spec = spec.model_copy(update={"context_keys": ["a", "b", "c"]})
    await store.create_job(
        "parent",
        "generate",
        {},
        user_id=None,
        thread_id=thread_id,
        platform="console",
        turn={"thread_id": thread_id, "parent_id": None, "kind": TurnKind.GENERATE},
    )
    await store.finish_job(
        "parent", JobStatus.DONE, turn_update={"image_keys": ["a", "b", "c"], "identity_scores": [0.5, 0.6, 0.7]}
    )
    parent = await store.turn_for_job("parent")
    await store.create_job(
        spec.job_id,
        spec.kind,
        spec.model_dump(mode="json"),
        user_id=None,
        thread_id=thread_id,
        platform="console",
        turn={"thread_id": thread_id, "parent_id": parent.id, "kind": TurnKind.EDIT},
    )
    bus = LocalBus()
    await JobRunner(_Scored(), store, bus).execute(spec.model_dump(mode="json"))
    turn = await store.turn_for_job(spec.job_id)
    job = await store.get_job(spec.job_id)
    assert turn.image_keys == ["a", "new", "c"]
    assert turn.identity_scores == [0.5, 0.8, 0.7]  # the others keep the parent's scores
    assert job.result["identity_notes"] == ["", "below threshold", ""]
    assert isinstance(await bus.last(spec.job_id), Done)
