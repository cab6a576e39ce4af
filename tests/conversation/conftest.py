"""Fixtures for the conversation: one tiny engine per test session, an app per test."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.app import App, build_app
from bot.console import ConsoleFrontEnd
from storage.blobs import BlobStore
from storage.settings import Settings, load_settings


@pytest.fixture(scope="session")
def shared_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("engine")
    return {"blobs": root / "blobs", "loras": root / "loras"}


@pytest.fixture(scope="session")
def tiny_engine(shared_dirs: dict[str, Path]) -> Any:
    """The real engine on the tiny random Kontext pipeline, loaded once for the session."""
    from engine.config import EngineConfig
    from engine.render.engine import Engine

    config = EngineConfig(model="tiny", device="cpu", lora_dir=shared_dirs["loras"], identity_threshold=0.6)
    engine = Engine(config, BlobStore(shared_dirs["blobs"]))
    engine.load()
    return engine


def app_settings(tmp_path: Path, shared_dirs: dict[str, Path], **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'app.db'}",
        "blob_dir": shared_dirs["blobs"],
        "lora_dir": shared_dirs["loras"],
        "engine_model": "tiny",
        "engine_device": "cpu",
        "redis_url": None,
    }
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture
async def app(tmp_path: Path, shared_dirs: dict[str, Path], tiny_engine: Any) -> AsyncIterator[App]:
    app = await build_app(app_settings(tmp_path, shared_dirs), engine=tiny_engine)
    yield app
    await app.close()


@pytest.fixture
def console(app: App, tmp_path: Path) -> ConsoleFrontEnd:
    return ConsoleFrontEnd(app.conversation, tmp_path / "out", user="ann", stream=io.StringIO(), live=False)


def png_bytes(size: tuple[int, int] = (48, 32), color: str = "orange", fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()
