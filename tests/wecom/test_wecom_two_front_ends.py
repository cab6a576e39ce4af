"""Issue 20 item 5: two WeCom front ends on one database (behind a load balancer). The one that
took the messages is killed with their answers still waiting; the survivor, which keeps running
(no restart), takes its rows over once their lease lapses and answers every one."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import select

from storage.db import Database
from storage.models import InboxItem, InboxState
from tests.fakes.wecom_api import FakeWeComAPI
from tests.services import free_port
from tests.wecom.harness import AGENT_ID, CORP_ID, SECRET, WeComSender, text_xml
from tests.wecom.test_wecom_kill import FrontEndProcess, frontend_env

pytestmark = pytest.mark.slow

ALICE = "alice.zhang"
MESSAGES = 40  # 30 answered within the send budget, the other 10 wait when the front end dies
REPLY = re.compile(r"no post #(\d+)")


def _answered(fake: FakeWeComAPI) -> Counter[int]:
    return Counter(int(m) - 1000 for t in fake.texts_to(ALICE) for m in REPLY.findall(t))


async def _states_once_settled(db: Database, limit_s: float = 10.0) -> list[str]:
    """The rows' states once none is pending any more (the last reply's row is marked done just
    after its message went out), or as they are after ``limit_s``."""
    deadline = asyncio.get_running_loop().time() + limit_s
    while True:
        async with db.read() as s:
            states = list(await s.scalars(select(InboxItem.state)))
        if InboxState.PENDING not in states or asyncio.get_running_loop().time() > deadline:
            return states
        await asyncio.sleep(0.1)


@pytest.mark.timeout(300)
async def test_survivor_takes_over_a_dead_front_ends_pending_rows(tmp_path: Path, database_url: str) -> None:
    port_a, port_b = free_port(), free_port()
    async with FakeWeComAPI(CORP_ID, SECRET, AGENT_ID) as fake:
        first = FrontEndProcess(frontend_env(database_url, tmp_path, fake, port_a), tmp_path)
        await first.ready()
        survivor_env = frontend_env(database_url, tmp_path, fake, port_b) | {"TEST_SENDS_PER_MINUTE": "100000"}
        survivor = FrontEndProcess(survivor_env, tmp_path)
        db = Database(database_url)
        try:
            await survivor.ready()
            sender = WeComSender()
            async with aiohttp.ClientSession() as http:
                for number in range(1, MESSAGES + 1):  # all to the first front end
                    params, body = sender.envelope(text_xml(ALICE, f"/thread {1000 + number}"))
                    async with http.post(f"http://127.0.0.1:{port_a}/wecom/callback", params=params, data=body) as r:
                        assert r.status == 200
            await fake.wait_for(lambda f: len(f.texts_to(ALICE)) >= 30, within_s=60)
            first.kill()
            answered_before = sum(_answered(fake).values())
            assert answered_before < MESSAGES

            await fake.wait_for(lambda f: set(_answered(f)) >= set(range(1, MESSAGES + 1)), within_s=60)
            states = await _states_once_settled(db)
        finally:
            survivor.stop()
            first.stop()
            await db.dispose()
    replies = _answered(fake)
    assert set(replies) == set(range(1, MESSAGES + 1))
    assert len([n for n, c in replies.items() if c > 1]) <= 1  # at most the one in hand at the kill
    assert len(states) == MESSAGES and InboxState.PENDING not in states
