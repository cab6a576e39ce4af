"""Issue 20 item 6: a cancel recorded in storage by another process (the admin page of
``persona-studio web`` next to a front end without redis) stops the running job within a few
steps; the user hears it was cancelled and their next job runs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from bot.app import App
from bot.console import ConsoleFrontEnd
from engine.jobs.outcomes import finish_job
from engine.jobs.progress import LocalBus
from storage.db import Database
from storage.models import JobStatus
from storage.repository import Store
from tests.conversation.helpers import queued, run
from tests.queue.conftest import Recorder

STEPS = 3000
pytestmark = pytest.mark.usefixtures("faceless_personas")  # a reference face would filter every candidate


async def test_cancel_recorded_by_another_process_stops_the_running_job(
    app: App, console: ConsoleFrontEnd, tmp_path: Path, tiny_engine: Any
) -> None:
    await run(console, "/persona create sweet Mia")
    recorder = await Recorder(app.conversation.queue.bus).start()
    try:
        (job_id,) = queued(await console.send(f"/persona train Mia images=2 steps={STEPS}"))
        await recorder.wait_for(lambda e: e.job_id == job_id and e.state == "running" and e.step >= 2, 120)

        elsewhere = Store(Database(app.settings.database_url))  # the web process: its own engine and bus
        try:
            reason = "cancelled by an operator"
            assert await finish_job(elsewhere, LocalBus(), job_id, JobStatus.CANCELLED, error=reason)
        finally:
            await elsewhere.db.dispose()
        recorded = time.monotonic()
        stopped = await recorder.wait_for(lambda e: e.job_id == job_id and e.state == "cancelled", 30)
        took = time.monotonic() - recorded
        totals = [(e.step, e.total) for e in recorder.of(job_id) if e.state == "running"]
        print(f"stopped {took:.2f} s after the cancel was stored, at step {totals[-1]}")
        assert stopped.error == "cancelled by an operator"
        assert took < 5.0 and totals[-1][0] < totals[-1][1]
        await console.wait_job(job_id, limit_s=30)  # the user was told
        assert any(getattr(a, "state", "") == "cancelled" and a.job_id == job_id for a in console.actions)

        await console.send("/settings steps=2")
        (next_job,) = queued(await console.send("/post Mia the same on the beach"))
        await console.wait_job(next_job, limit_s=60)
        assert (await app.store.get_job(next_job)).status == JobStatus.DONE
    finally:
        await recorder.stop()
