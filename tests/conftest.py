"""Shared fixtures: settings isolated per test, real redis and PostgreSQL, databases on both."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.s3_server import s3_bucket, s3_endpoint
from tests.services import (
    RedisServer,
    postgres_admin_url,
    postgres_database,
    postgres_reachable,
    redis_binary,
)

__all__ = ["s3_bucket", "s3_endpoint"]  # the loopback S3 fixtures, for every test folder

# Nothing in the tests may reach a model hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the tiny model's character-level tokenizers make the libraries warn about truncation on every job
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test runs in its own folder: a stray .env or ./data never leaks in."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("DISCORD_", "WECOM_", "AWS_")) or name in {"REDIS_URL", "DATABASE_URL", "BLOB_URL"}:
            monkeypatch.delenv(name, raising=False)
    yield


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer | str]:
    """A real redis: our own redis-server on a free port, else REDIS_URL, else skip."""
    binary = redis_binary()
    if binary:
        server = RedisServer(binary)
        server.start()
        yield server
        server.close()
        return
    url = os.environ.get("TEST_REDIS_URL") or os.environ.get("REDIS_URL")
    if not url:
        pytest.skip("no redis-server binary on PATH and no TEST_REDIS_URL/REDIS_URL set")
    yield url


@pytest.fixture
def redis_url(redis_server: RedisServer | str) -> Iterator[str]:
    """A redis URL with an empty database for this test."""
    url = redis_server.url if isinstance(redis_server, RedisServer) else redis_server
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    yield url


@pytest.fixture
def fresh_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own, which the test may stop and start again."""
    binary = redis_binary()
    if not binary:
        pytest.skip("no redis-server binary on PATH")
    server = RedisServer(binary)
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def postgres_available() -> str:
    # run in a thread of its own: this may be requested from inside a running event loop
    with ThreadPoolExecutor(1) as pool:
        reason = pool.submit(asyncio.run, postgres_reachable(postgres_admin_url())).result()
    if reason:
        pytest.skip(reason)
    return postgres_admin_url()


@pytest.fixture
async def postgres_url(postgres_available: str) -> AsyncIterator[str]:
    async with postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The same test on SQLite (a file in tmp_path) and on a throwaway PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
        return
    request.getfixturevalue("postgres_available")
    async with postgres_database() as url:
        yield url


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[object]:
    from storage.db import Database
    from storage.repository import Store

    db = Database(database_url)
    await db.upgrade()
    yield Store(db)
    await db.dispose()
