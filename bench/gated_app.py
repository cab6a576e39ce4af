"""What the answer-time benches share: the app on SQLite with a gated fake engine (nothing
finishes: a backlog stays a backlog), and members of one workspace with a ready persona each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import update


async def gated_app(folder: Path) -> tuple[Any, Any]:
    """``(app, engine)``: ``build_app`` on a SQLite file in ``folder``, embedded queue, tiny settings;
    set ``engine.release`` to let jobs finish."""
    from bot.app import build_app
    from storage.blobs import BlobStore
    from storage.settings import load_settings
    from tests.fakes.engine import FakeEngine

    settings = load_settings(
        database_url=f"sqlite+aiosqlite:///{folder / 'app.db'}",
        blob_dir=folder / "blobs",
        lora_dir=folder / "loras",
        engine_model="tiny",
        redis_url=None,
    )
    engine = FakeEngine(blobs=BlobStore(folder / "blobs"), gated=True)
    return await build_app(settings, engine=engine), engine


async def member_with_persona(store: Any, workspace_id: int, user_id: str, user_name: str, persona: str) -> None:
    """A user who is a member of the workspace and owns a ready persona there."""
    from storage.models import Persona

    owner = await store.user("discord", user_id, user_name)
    await store.join_workspace(workspace_id, owner.id)
    made = await store.create_persona(owner.id, persona, "sweet", [], seed=1, workspace_id=workspace_id)
    async with store.db.session() as s:
        await s.execute(update(Persona).where(Persona.id == made.id).values(status="ready"))
