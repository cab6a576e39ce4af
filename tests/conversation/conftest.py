"""Fixtures for the conversation: one tiny engine per test session, an app per test."""

from __future__ import annotations

import io
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.app import App, build_app
from bot.console import ConsoleFrontEnd
from commands.handlers import personas
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


#: seeds of the personas created in chat by tests that train them: random.Random(20) gives
#: 649421745, then 1115950379, ...; the tiny engine's portraits of the first two are far from a face
#: to dlib in both tries (best detection scores -0.996 and -0.962; a face scores >= 0; measured over
#: 300 tries of other seeds the best was -0.33)
PERSONA_SEEDS = 20


@pytest.fixture
def faceless_personas(monkeypatch: pytest.MonkeyPatch) -> None:
    """Personas created in chat get their seeds from a fixed sequence, not a fresh random one.

    The tiny engine's random weights paint noise, in which dlib very rarely sees a "face"; a
    persona whose portrait had one gets that face as its reference, and a training of it then
    keeps no candidate ("no candidate matched the persona's face"). Training tests depend on the
    reference showing no face: with these seeds it does not, whatever ran before."""
    monkeypatch.setattr(personas, "random", random.Random(PERSONA_SEEDS))


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
