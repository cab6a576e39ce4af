"""The mark of a cancel the owner was told of (chat ``/cancel``): set only on an unfinished job,
kept only when the job ends cancelled (the one transaction of its outcome decides)."""

from __future__ import annotations

from storage.job_records import cancel_told
from storage.models import JobStatus
from storage.repository import Store


async def _jobs(store: Store, *names: str) -> None:
    owner = await store.user("console", "ann")
    for name in names:
        await store.create_job(name, "generate", {"job_id": name}, user_id=owner.id, thread_id=None, platform="console")


async def test_the_mark_counts_only_for_a_job_that_ends_cancelled(store: Store) -> None:
    await _jobs(store, "cancelled", "done", "failed", "finished")
    for name in ("cancelled", "done", "failed"):
        assert await store.note_cancel_told(name)
    await store.start_job("done")

    assert await store.finish_job("cancelled", JobStatus.CANCELLED, error="cancelled")
    assert await store.finish_job("done", JobStatus.DONE, result={"image_keys": ["k1"]})
    assert await store.finish_job("failed", JobStatus.FAILED, error="out of memory")
    cancelled, done, failed = [await store.get_job(name) for name in ("cancelled", "done", "failed")]
    assert cancel_told(cancelled)
    assert done.result == {"image_keys": ["k1"]} and not cancel_told(done)  # its images are delivered
    assert failed.result is None and not cancel_told(failed)

    assert await store.finish_job("finished", JobStatus.CANCELLED, error="cancelled by an operator")
    assert not await store.note_cancel_told("finished")  # too late: the user is told as usual
    assert not cancel_told(await store.get_job("finished"))
    assert not await store.note_cancel_told("no-such-job")
