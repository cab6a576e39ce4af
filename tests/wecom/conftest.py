"""Fixtures of the WeCom tests: the fake WeCom API on loopback and an aiohttp client session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.fakes.wecom_api import FakeWeComAPI
from tests.wecom.harness import AGENT_ID, CORP_ID, SECRET


@pytest.fixture
async def fake_wecom() -> AsyncIterator[FakeWeComAPI]:
    async with FakeWeComAPI(CORP_ID, SECRET, AGENT_ID) as fake:
        yield fake


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class FakeClock:
    """An injectable clock whose sleep advances time instead of waiting."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
