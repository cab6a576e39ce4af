"""Engine fixtures: one tiny Engine (one tiny pipeline) and one dlib embedder per test session."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing here may reach a model hub

#: Real photos shipped in the insightface wheel: t1.jpg (six people) and Tom_Hanks_54745.png.
INSIGHTFACE_IMAGES = Path(importlib.util.find_spec("insightface").origin).parent / "data" / "images"  # type: ignore[arg-type, union-attr]


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory):  # -> engine.render.engine.Engine
    """The session's tiny engine, loaded; its LoRA library is written on first load."""
    from engine.config import EngineConfig
    from engine.render.engine import Engine
    from storage.blobs import BlobStore

    root = tmp_path_factory.mktemp("engine")
    eng = Engine(
        EngineConfig(model="tiny", lora_dir=root / "loras", identity_threshold=0.55), BlobStore(root / "blobs")
    )
    eng.load()
    return eng


@pytest.fixture
def lp(engine) -> Iterator:  # -> engine.render.pipeline.LoadedPipeline
    """The session's tiny pipeline with every LoRA switched off."""
    engine.adapters.apply([])
    yield engine.pipeline
    engine.adapters.apply([])


@pytest.fixture(scope="session")
def dlib_embedder():  # -> engine.render.identity.DlibEmbedder
    from engine.render.identity import DlibEmbedder

    return DlibEmbedder()
