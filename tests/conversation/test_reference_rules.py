"""The reference limit of the klein family, and personas from a photo: consent, the admin setting."""

from __future__ import annotations

import hashlib
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.app import App, build_app
from bot.console import ConsoleFrontEnd
from engine.specs import reference_limit
from storage.blobs import BlobStore
from tests.conversation.conftest import app_settings, png_bytes
from tests.conversation.helpers import errors, job_spec, run
from tests.conversation.test_references import _counts
from tests.fakes.engine import FakeEngine


async def _app(tmp_path: Path, shared_dirs: dict[str, Path], **overrides: Any) -> tuple[App, FakeEngine]:
    loras = tmp_path / "loras"
    (loras / "sweet").mkdir(parents=True)
    (loras / "sweet" / "a.safetensors").write_bytes(b"")  # an archetype folder; the fake engine reads nothing
    engine = FakeEngine(blobs=BlobStore(shared_dirs["blobs"]))
    app = await build_app(app_settings(tmp_path, shared_dirs, lora_dir=loras, **overrides), engine=engine)
    return app, engine


@pytest.fixture
async def klein(tmp_path: Path, shared_dirs: dict[str, Path]) -> AsyncIterator[tuple[App, FakeEngine]]:
    app, engine = await _app(tmp_path, shared_dirs, engine_model="tiny-klein")
    yield app, engine
    await app.close()


def _console(app: App, tmp_path: Path, user: str = "ann") -> ConsoleFrontEnd:
    return ConsoleFrontEnd(app.conversation, tmp_path / user, user=user, stream=io.StringIO(), live=False)


def _files(tmp_path: Path, *colors: str) -> list[Path]:
    paths = []
    for color in colors:
        path = tmp_path / f"{color}.png"
        path.write_bytes(png_bytes((64, 64), color))
        paths.append(path)
    return paths


async def test_klein_takes_at_most_four_reference_images(klein: tuple[App, FakeEngine], tmp_path: Path) -> None:
    app, engine = klein
    assert reference_limit("tiny-klein") == 4 and reference_limit("tiny") is None
    ann = _console(app, tmp_path)
    await run(ann, "/persona create sweet Mia")
    a, b, c, scene = _files(tmp_path, "red", "green", "blue", "gray")
    for name, path in (("a", a), ("b", b), ("c", c)):
        await ann.send(f"/product add {name} @{path}")

    # a post is counted as its edits will be: the image edited + portrait + products + scene
    before = await _counts(app)
    refused = errors(await ann.send(f"/post Mia product=a,b @scene={scene} a latte"))
    assert refused and "at most 4 reference images" in refused[0] and "this post would use 5" in refused[0]
    assert "the image each edit changes, the persona's portrait, product a, product b, a scene image" in refused[0]
    assert await _counts(app) == before

    # edited image + portrait + a product + a scene = 4: fine
    await run(ann, f"/post Mia product=a @scene={scene} a latte")
    assert [(r.role, r.name) for r in engine.specs[-1].references] == [("product", "a"), ("scene", None)]
    # one more product in an edit makes 5
    before = await _counts(app)
    refused = errors(await ann.send("product=c now with the third product"))
    assert refused and "this edit would use 5" in refused[0] and "the current image" in refused[0]
    assert await _counts(app) == before
    # the post's own edits fit
    await run(ann, "closer")
    assert engine.specs[-1].kind == "edit" and len(engine.specs[-1].references) == 2


async def test_the_limit_applies_to_images_sent_before_the_post(klein: tuple[App, FakeEngine], tmp_path: Path) -> None:
    app, _engine = klein
    ann = _console(app, tmp_path)
    await run(ann, "/persona create sweet Mia")
    paths = _files(tmp_path, "red", "green", "blue")
    for path in paths:
        await ann.send(f"@product={path}")
    before = await _counts(app)
    assert "would use 5" in errors(await ann.send("/post Mia a latte"))[0]
    assert await _counts(app) == before


async def test_persona_from_a_photo_with_consent(klein: tuple[App, FakeEngine], tmp_path: Path) -> None:
    app, engine = klein
    ann = _console(app, tmp_path)
    (face,) = _files(tmp_path, "pink")
    await run(ann, f"/persona create-from-photo Zoe consent=yes @face={face}")
    owner = await app.store.user("console", "ann")
    persona = await app.store.find_persona(owner.id, "Zoe")
    key = hashlib.sha256(face.read_bytes()).hexdigest()
    assert persona is not None and persona.photo_key == key and persona.archetype == "photo"
    assert persona.status == "ready"
    spec = engine.specs[-1]
    assert spec.kind == "create_persona" and spec.persona.photo_key == key
    assert [(r.role, r.key) for r in spec.references] == [("face", key)]
    # its posts carry the photo to the engine
    await run(ann, "/post Zoe by the sea")
    assert engine.specs[-1].persona.photo_key == key
    thread = await app.store.get_thread((await app.store.get_user(owner.id)).current_thread_id)
    assert (await job_spec(app.store, await app.store.get_turn(thread.current_turn_id)))["persona"]["photo_key"] == key


async def test_persona_from_a_photo_sent_first_then_named(klein: tuple[App, FakeEngine], tmp_path: Path) -> None:
    app, _engine = klein
    ann = _console(app, tmp_path)
    (face,) = _files(tmp_path, "pink")
    await ann.send(f"@face={face}")
    await run(ann, "人设 照片创建 Zoe consent=yes")
    owner = await app.store.user("console", "ann")
    persona = await app.store.find_persona(owner.id, "Zoe")
    assert persona is not None and persona.photo_key == hashlib.sha256(face.read_bytes()).hexdigest()
    assert (await app.store.get_user(owner.id)).settings["pending_refs"] == []  # not the next post's face


async def test_persona_from_a_photo_refusals(klein: tuple[App, FakeEngine], tmp_path: Path) -> None:
    app, engine = klein
    ann = _console(app, tmp_path)
    (face,) = _files(tmp_path, "pink")
    before = await _counts(app), len(engine.specs)
    assert "consent" in errors(await ann.send(f"/persona create-from-photo Zoe @face={face}"))[0]
    assert "consent" in errors(await ann.send(f"/persona create-from-photo Zoe consent=no @face={face}"))[0]
    assert "attach a photo" in errors(await ann.send("/persona create-from-photo Zoe consent=yes"))[0].lower()
    assert (await _counts(app), len(engine.specs)) == before
    assert await app.store.find_persona((await app.store.user("console", "ann")).id, "Zoe") is None


async def test_persona_from_a_photo_is_refused_when_the_admin_turned_it_off(
    tmp_path: Path, shared_dirs: dict[str, Path]
) -> None:
    app, engine = await _app(tmp_path, shared_dirs, allow_photo_personas=False)
    try:
        ann = _console(app, tmp_path)
        (face,) = _files(tmp_path, "pink")
        refused = errors(await ann.send(f"/persona create-from-photo Zoe consent=yes @face={face}"))
        assert refused and "ALLOW_PHOTO_PERSONAS=false" in refused[0]
        assert await app.store.list_personas((await app.store.user("console", "ann")).id) == []
        assert engine.specs == []
    finally:
        await app.close()
