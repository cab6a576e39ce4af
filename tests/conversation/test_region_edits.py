"""Region edits and try-on through the console, on the real tiny engine and the tiny detector +
SAM: region=<words> and an attached mask change only the region (pixel for pixel outside it),
/history and /export name the region and carry its mask, bad masks change nothing, /tryon puts a
library product on, a regenerate repaints the same region."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bot.app import App
from bot.console import ConsoleFrontEnd
from commands.events import FileOut
from engine.render.regions.masks import prepare_region
from storage.models import Turn, TurnStatus
from tests.conversation.conftest import png_bytes
from tests.conversation.helpers import errors, job_spec, run, texts

pytestmark = pytest.mark.slow


async def _current(app: App, console: ConsoleFrontEnd) -> Turn:
    user = await app.store.user("console", console.user)
    thread = await app.store.get_thread(int(user.current_thread_id))
    return await app.store.get_turn(int(thread.current_turn_id))


def _pixels(app: App, key: str) -> np.ndarray:
    return np.asarray(app.blobs.open_image(key).convert("RGB"))


def _changed_only_inside(app: App, before: str, after: str, mask_key: str) -> None:
    mask = np.asarray(app.blobs.open_image(mask_key)) > 0
    hard = prepare_region(mask).hard
    old, new = _pixels(app, before), _pixels(app, after)
    assert (old[~hard] == new[~hard]).all()  # outside the mask: the previous image, exactly
    assert (old[hard] != new[hard]).any()


async def _post(console: ConsoleFrontEnd, count: int = 1) -> None:
    await run(console, "/persona create sweet mia")
    await run(console, f"/post mia count={count} latte on a balcony")


async def test_region_by_words_history_and_export(app: App, console: ConsoleFrontEnd, tiny_engine: Any) -> None:
    tiny_engine.segmenter().threshold = 0.1
    await _post(console)
    first = await _current(app, console)
    reply = texts(await run(console, "region=top make it red linen"))
    assert "region: top" in reply
    turn = await _current(app, console)
    assert turn.status == TurnStatus.DONE and turn.parent_id == first.id
    region = turn.params["region"]
    assert region["source"] == "words" and region["words"] == "top" and len(region["mask_keys"]) == 1
    assert (await job_spec(app.store, turn))["region"]["mask_keys"] == region["mask_keys"]
    _changed_only_inside(app, first.image_keys[0], turn.image_keys[0], region["mask_keys"][0])
    assert f"#{turn.id} edit: make it red linen (region: top)" in texts(await run(console, "/history"))
    await run(console, "/approve")
    exported = next(a for a in await run(console, "/export") if isinstance(a, FileOut))
    archive = zipfile.ZipFile(io.BytesIO(exported.data))
    assert f"masks/turn{turn.id}.png" in archive.namelist()
    manifest = json.loads(archive.read("manifest.json"))
    entry = next(t for t in manifest["turns"] if t["id"] == turn.id)
    assert entry["region"]["masks"] == [f"masks/turn{turn.id}.png"] and entry["region"]["words"] == "top"

    # a regenerate repaints the same region (the recorded mask), with a new seed
    regen = await run(console, "/regen")
    again = await _current(app, console)
    assert again.id != turn.id, texts(regen)
    assert again.params["region"]["mask_keys"] == region["mask_keys"] and again.image_keys != turn.image_keys
    _changed_only_inside(app, first.image_keys[0], again.image_keys[0], region["mask_keys"][0])


async def test_a_mask_image_on_one_of_two_images(app: App, console: ConsoleFrontEnd, tmp_path: Path) -> None:
    await _post(console, count=2)
    first = await _current(app, console)
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (4, 4, 16, 20))
    path = tmp_path / "mask.png"
    mask.save(path)
    reply = texts(await run(console, f"#2 region=ignored-by-mask @mask={path} make it blue"))
    assert "image 2" in reply
    turn = await _current(app, console)
    assert turn.params["region"]["source"] == "mask" and turn.image_keys[0] == first.image_keys[0]
    _changed_only_inside(app, first.image_keys[1], turn.image_keys[1], turn.params["region"]["mask_keys"][0])
    assert "(region: mask)" in texts(await run(console, "/history"))


async def test_bad_masks_change_nothing(app: App, console: ConsoleFrontEnd, tmp_path: Path) -> None:
    await _post(console)
    before = await _current(app, console)
    black = tmp_path / "black.png"
    Image.new("L", (64, 64), 0).save(black)
    tall = tmp_path / "tall.png"
    Image.new("L", (16, 64), 255).save(tall)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    for path, why in ((black, "covers nothing"), (tall, "shapes differ"), (junk, "")):
        actions = await console.send(f"@mask={path} make it red")
        assert errors(actions) and why in errors(actions)[0], actions
    assert (await _current(app, console)).id == before.id
    assert len(await app.store.turns(before.thread_id)) == 1
    assert not app.blobs.exists(hashlib.sha256(black.read_bytes()).hexdigest())


async def test_words_found_nowhere_are_reported(app: App, console: ConsoleFrontEnd, tiny_engine: Any) -> None:
    await _post(console)
    before = await _current(app, console)
    segmenter = tiny_engine.segmenter()
    segmenter.threshold, saved = 1.0, segmenter.threshold
    try:
        await run(console, "region=hat make it a beret")
    finally:
        segmenter.threshold = saved
    shown = console.stream.getvalue()  # type: ignore[attr-defined]  # the delivered failure
    assert "that did not work: no 'hat' found in image 1" in shown
    assert "NothingFound" not in shown  # the user's message, not a class name
    assert (await _current(app, console)).id == before.id


async def test_tryon_with_a_library_product(app: App, console: ConsoleFrontEnd, tmp_path: Path) -> None:
    shirt = tmp_path / "shirt.png"
    shirt.write_bytes(png_bytes((48, 64), "navy"))
    await run(console, f"/product add shirt @product={shirt}")
    await _post(console)
    first = await _current(app, console)
    reply = texts(await run(console, "/tryon shirt"))
    assert "wear shirt" in reply
    turn = await _current(app, console)
    assert turn.params["region"]["tryon"] is True and turn.image_keys != first.image_keys
    assert any(ref.get("name") == "shirt" for ref in turn.references)
    assert "(region: clothes (try-on))" in texts(await run(console, "/history"))
    assert "needs a product" in errors(await console.send("/试穿"))[0]
