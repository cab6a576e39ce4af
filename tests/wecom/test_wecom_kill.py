"""kill -9 of the WeCom front end while acknowledged messages wait behind the per-user lock and
the 30-a-minute send budget: a new process handles every one of them; nothing answered 200 is lost."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import func, select

from storage.db import Database
from storage.models import InboxItem, InboxState
from tests.fakes.wecom_api import FakeWeComAPI
from tests.services import free_port
from tests.wecom.harness import AES_KEY, AGENT_ID, CORP_ID, SECRET, TOKEN, WeComSender, text_xml

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]

ALICE = "alice.zhang"
MESSAGES = 75  # 30 answered within the budget, the other 45 wait when the process dies
REPLY = re.compile(r"no post #(\d+)")


def frontend_env(database_url: str, tmp_path: Path, fake: FakeWeComAPI, port: int) -> dict[str, str]:
    """The environment of a WeCom front end process on ``port`` against ``fake``'s API."""
    return {
        **{k: v for k, v in os.environ.items() if k != "REDIS_URL"},
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": database_url,
        "BLOB_DIR": str(tmp_path / "blobs"),
        "LORA_DIR": str(tmp_path / "loras"),
        "ENGINE_MODEL": "tiny",
        "WECOM_CORP_ID": CORP_ID,
        "WECOM_AGENT_ID": str(AGENT_ID),
        "WECOM_SECRET": SECRET,
        "WECOM_TOKEN": TOKEN,
        "WECOM_AES_KEY": AES_KEY,
        "WECOM_API_BASE": fake.base_url,
        "WECOM_HOST": "127.0.0.1",
        "WECOM_PORT": str(port),
        "TEST_SENDS_PER_MINUTE": "30",
    }


class FrontEndProcess:
    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.wecom.frontend_process"],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    async def ready(self) -> None:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.process.stdout.readline), 60)
        assert line.strip() == "READY", f"front end did not start (exit {self.process.poll()})"

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=15)


async def _counts(db: Database) -> dict[str, int]:
    async with db.session() as s:
        rows = await s.execute(select(InboxItem.state, func.count()).group_by(InboxItem.state))
        return {state: count for state, count in rows.all()}


async def test_kill_9_with_acknowledged_messages_queued_loses_none(tmp_path: Path) -> None:
    port = free_port()
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    async with FakeWeComAPI(CORP_ID, SECRET, AGENT_ID) as fake:
        env = frontend_env(database_url, tmp_path, fake, port)
        first = FrontEndProcess(env, tmp_path)
        db = Database(database_url)
        try:
            await first.ready()
            sender = WeComSender()
            url = f"http://127.0.0.1:{port}/wecom/callback"
            async with aiohttp.ClientSession() as http:
                for number in range(1, MESSAGES + 1):  # each answer names its message: "no post #N"
                    params, body = sender.envelope(text_xml(ALICE, f"/thread {1000 + number}"))
                    async with http.post(url, params=params, data=body) as response:
                        assert response.status == 200
            # the budget is spent: the rest wait behind the rate limiter (and the user's lock)
            await fake.wait_for(lambda f: len(f.texts_to(ALICE)) >= 30, within_s=60)
            first.kill()
            counts = await _counts(db)
            assert counts.get(InboxState.PENDING, 0) >= 40, counts
            answered_before = len(fake.texts_to(ALICE))

            env["TEST_SENDS_PER_MINUTE"] = "100000"  # the new process: no budget left to wait for
            second = FrontEndProcess(env, tmp_path)
            try:
                await second.ready()
                await fake.wait_for(
                    lambda f: (
                        {int(m) - 1000 for t in f.texts_to(ALICE) for m in REPLY.findall(t)}
                        >= set(range(1, MESSAGES + 1))
                    ),
                    within_s=120,
                )
            finally:
                second.stop()
        finally:
            first.stop()
            await db.dispose()
        replies = Counter(int(m) - 1000 for t in fake.texts_to(ALICE) for m in REPLY.findall(t))
    assert set(replies) == set(range(1, MESSAGES + 1))  # none lost
    twice = [n for n, c in replies.items() if c > 1]
    assert len(twice) <= 1, twice  # at most the one being answered when the process died
    assert answered_before < MESSAGES
    print(f"kill -9: {MESSAGES} acknowledged, {answered_before} answered before, all answered after; twice: {twice}")
