"""Issue 20 items 5 and 14: at most one training per user at a time — also when two arrive at
once (the database's unique index, not check-then-act) — and a configurable cap on images × steps."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from bot.app import build_app
from bot.console import ConsoleFrontEnd
from engine.specs import JobKind
from storage.blobs import BlobStore
from storage.models import JobStatus
from tests.conversation.conftest import app_settings
from tests.conversation.helpers import errors, queued, run
from tests.fakes.engine import FakeEngine


async def test_one_training_per_user_even_from_two_front_ends_at_once(
    tmp_path: Path, shared_dirs: dict[str, Path]
) -> None:
    engine = FakeEngine(blobs=BlobStore(shared_dirs["blobs"]), gated=True)  # trainings hold the engine
    settings = app_settings(tmp_path, shared_dirs, max_train_work=5000)
    first, second = await build_app(settings, engine=engine), await build_app(settings, engine=engine)
    try:
        ann = ConsoleFrontEnd(first.conversation, tmp_path / "a", user="ann", stream=io.StringIO(), live=False)
        ann_there = ConsoleFrontEnd(second.conversation, tmp_path / "b", user="ann", stream=io.StringIO(), live=False)
        engine.release.set()
        await run(ann, "/persona create sweet Mia")
        await run(ann, "/persona create sweet Zoe")
        engine.release.clear()

        over = await ann.send("/persona train Mia images=10 steps=501")
        assert "over this installation's limit of 5000" in errors(over)[0] and not queued(over)

        answers = await asyncio.gather(
            ann.send("/persona train Mia steps=20"), ann_there.send("/persona train Zoe steps=20")
        )
        accepted = [a for a in answers if queued(a)]
        refused = [errors(a)[0] for a in answers if not queued(a)]
        assert len(accepted) == 1 and len(refused) == 1, answers
        assert "already training" in refused[0]
        user = await first.store.user("console", "ann")
        trainings = [j for j in await first.store.user_jobs(user.id) if j.kind == JobKind.TRAIN_PERSONA]
        assert len(trainings) == 1 and trainings[0].status in (JobStatus.QUEUED, JobStatus.RUNNING)
    finally:
        engine.release.set()
        await first.close()
        await second.close()
