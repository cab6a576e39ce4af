"""References through the console: the product library, roles, per-turn records, the export."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

from bot.app import App
from bot.console import ConsoleFrontEnd
from commands.events import Attachment, ChooseRole, Event, EventKind, FileOut, Images
from storage.models import Turn
from tests.conversation.conftest import png_bytes
from tests.conversation.helpers import errors, job_spec, queued, run, texts


def _file(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def err(actions: list) -> str:  # type: ignore[type-arg]
    """The first error shown, lower-cased (errors start with a capital)."""
    found = errors(actions)
    assert found, actions
    return found[0].lower()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _counts(app: App) -> tuple[int, ...]:
    from sqlalchemy import func, select

    from storage.models import Job, Product, Thread, Turn

    async with app.db.session() as s:
        return tuple(
            [int(await s.scalar(select(func.count()).select_from(m)) or 0) for m in (Product, Thread, Turn, Job)]
        )


async def test_product_library_crud_and_chinese_aliases(app: App, console: ConsoleFrontEnd, tmp_path: Path) -> None:
    mug = png_bytes((80, 80), "red")
    added = await console.send(f"/product add mug @product={_file(tmp_path, 'mug.png', mug)}")
    assert not errors(added) and isinstance(added[0], Images) and added[0].images[0].blob_key == sha(mug)
    assert "mug" in texts(await console.send("/product list"))
    shown = await console.send("/product show MUG")  # names are looked up case-insensitively
    assert isinstance(shown[0], Images) and shown[0].images[0].blob_key == sha(mug)
    assert "already has a product named 'mug'" in err(await console.send(f"/product add mug @{tmp_path / 'mug.png'}"))
    assert "attach the product's image" in err(await console.send("/product add cap"))
    assert "1-40 letters" in err(await console.send(f"/product add {'x' * 41} @{tmp_path / 'mug.png'}"))

    # 商品 添加 <名字> right after an image saves that image; it is no longer waiting for a post
    cup = png_bytes((64, 96), "blue")
    assert "next post or edit" in texts(await console.send(f"@{_file(tmp_path, 'cup.png', cup)}"))
    assert not errors(await console.send("商品 添加 杯子"))
    owner = await app.store.user("console", "ann")
    product = await app.store.find_product(owner.id, "杯子")
    assert product is not None and product.image_key == sha(cup)
    assert (await app.store.get_user(owner.id)).settings.get("pending_refs") == []
    listed = texts(await console.send("商品 列表"))
    assert "mug" in listed and "杯子" in listed

    assert "deleted" in texts(await console.send("商品 删除 杯子"))
    assert await app.store.find_product(owner.id, "杯子") is None
    assert "no product named '杯子'" in err(await console.send("/product show 杯子"))


async def test_products_stay_in_their_workspace(app: App, console: ConsoleFrontEnd, tmp_path: Path) -> None:
    await console.send(f"/product add mug @product={_file(tmp_path, 'mug.png', png_bytes())}")
    bob = ConsoleFrontEnd(
        app.conversation, tmp_path / "bob", user="bob", stream=io.StringIO(), live=False, workspace="shop-b"
    )
    assert "no product named 'mug'" in err(await bob.send("/product show mug"))
    assert "no product named 'mug'" in err(await bob.send("/product delete mug"))
    assert "empty" in texts(await bob.send("/product list"))
    await run(bob, "/persona create sweet Bo")
    before = await _counts(app)
    assert "no product named 'mug'" in err(await bob.send("/post Bo product=mug a latte"))
    assert await _counts(app) == before  # nothing stored
    ann = await app.store.user("console", "ann")
    assert await app.store.find_product(ann.id, "mug") is not None  # still ann's


async def test_post_and_edit_record_their_references_and_the_export_lists_them(
    app: App, console: ConsoleFrontEnd, tmp_path: Path
) -> None:
    mug, cap, scene = png_bytes((80, 80), "red"), png_bytes((72, 72), "green"), png_bytes((96, 64), "teal")
    await console.send(f"/product add mug @{_file(tmp_path, 'mug.png', mug)}")
    await console.send(f"/product add cap @{_file(tmp_path, 'cap.png', cap)}")
    await run(console, "/persona create sweet Mia")
    posted = await run(console, f"/post Mia count=2 product=mug @scene={_file(tmp_path, 's.png', scene)} latte")
    assert "with product mug, a scene image" in texts(posted) or any("product mug" in a.text for a in posted)  # type: ignore[attr-defined]
    thread = await app.store.get_thread((await app.store.user("console", "ann")).current_thread_id)
    first = await app.store.get_turn(thread.current_turn_id)
    want = [{"role": "product", "key": sha(mug), "name": "mug"}, {"role": "scene", "key": sha(scene), "name": None}]
    assert first.references == want
    spec = await job_spec(app.store, first)
    assert spec["references"] == want and spec["context_keys"] == [sha(scene)]  # Kontext starts from the scene

    # an edit adds a product of its own; the post's references stay
    edited = await run(console, "product=cap now she wears the cap")
    assert "with product cap" in texts(edited)
    edit = await app.store.get_turn((await app.store.get_thread(thread.id)).current_turn_id)
    assert edit.instruction == "now she wears the cap"
    assert edit.references == [*want, {"role": "product", "key": sha(cap), "name": "cap"}]
    assert (await job_spec(app.store, edit))["references"] == edit.references

    # a regenerate keeps the references of the turn it redoes
    await run(console, "/regen")
    regen = await app.store.get_turn((await app.store.get_thread(thread.id)).current_turn_id)
    assert regen.kind == "regenerate" and regen.references == edit.references

    await run(console, "/approve")
    exported = [a for a in await console.send("/export") if isinstance(a, FileOut)]
    manifest = json.loads(zipfile.ZipFile(io.BytesIO(exported[0].data)).read("manifest.json"))
    by_id = {t["id"]: t for t in manifest["turns"]}
    assert by_id[first.id]["references"] == [
        {"role": "product", "name": "mug", "sha256": sha(mug)},
        {"role": "scene", "name": None, "sha256": sha(scene)},
    ]
    assert by_id[regen.id]["references"][-1] == {"role": "product", "name": "cap", "sha256": sha(cap)}


def _message(text: str, *images: bytes, role: str | None = None) -> Event:
    files = tuple(Attachment(f"img{i}.png", data, role=role) for i, data in enumerate(images))
    return Event(platform="console", user_id="ann", kind=EventKind.MESSAGE, text=text, attachments=files)


def _click(role: str, key: str) -> Event:
    return Event(
        platform="console",
        user_id="ann",
        kind=EventKind.COMMAND,
        command="reference",
        options={"role": role, "key": key},
    )


async def _current(app: App) -> Turn:
    thread = await app.store.get_thread((await app.store.user("console", "ann")).current_thread_id)
    return await app.store.get_turn(thread.current_turn_id)


async def test_an_edit_image_gets_its_role_from_a_leading_word_or_a_button(
    app: App, console: ConsoleFrontEnd, tmp_path: Path
) -> None:
    await run(console, "/persona create sweet Mia")
    await run(console, "/post Mia a latte")
    bag, hat = png_bytes((64, 64), "purple"), png_bytes((64, 64), "yellow")
    # a leading role word names the role of images the platform did not say one for
    actions = await app.conversation.handle(_message("product: she holds the bag", bag))
    await console.wait_job(queued(actions)[0])
    edit = await _current(app)
    assert edit.instruction == "she holds the bag"
    assert edit.references == [{"role": "product", "key": sha(bag), "name": None}]

    # no role word: a question with buttons, and the edit waits for the click (nothing queued)
    before = await _counts(app)
    asked = await app.conversation.handle(_message("now with a hat", hat))
    assert len(asked) == 1 and isinstance(asked[0], ChooseRole) and asked[0].key == sha(hat)
    assert await _counts(app) == before
    actions = await app.conversation.handle(_click("face", sha(hat)))
    await console.wait_job(queued(actions)[0])
    waited = await _current(app)
    assert (waited.instruction, waited.parent_id) == ("now with a hat", edit.id)
    assert waited.references == [{"role": "face", "key": sha(hat), "name": None}]
    assert "no longer waiting" in err(await app.conversation.handle(_click("face", sha(hat))))  # used once


async def test_an_image_sent_alone_takes_the_chosen_role_into_the_next_post(app: App, console: ConsoleFrontEnd) -> None:
    await run(console, "/persona create sweet Mia")
    shoe = png_bytes((64, 80), "brown")
    asked = await app.conversation.handle(_message("", shoe))
    assert isinstance(asked[0], ChooseRole)
    assert "unknown" not in texts(await app.conversation.handle(_click("商品", sha(shoe))))  # Chinese role words too
    await run(console, "/post Mia new shoes")
    first = await _current(app)
    assert first.references == [{"role": "product", "key": sha(shoe), "name": None}]
    assert (await job_spec(app.store, first))["context_keys"] == []  # a product is not the scene
    ann = await app.store.user("console", "ann")
    assert ann.settings.get("pending_refs") == []  # used by that post only


async def test_bad_reference_images_are_refused_exactly_as_scene_images(
    app: App, console: ConsoleFrontEnd, tmp_path: Path
) -> None:
    await run(console, "/persona create sweet Mia")
    bad = _file(tmp_path, "bad.png", png_bytes()[:40])  # truncated
    gif = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (8, 8)).save(gif, format="GIF")
    anim = _file(tmp_path, "anim.gif", gif.getvalue())
    before = await _counts(app)
    for path in (bad, anim):
        scene_error = errors(await console.send(f"/post Mia a latte @{path}"))
        product_error = errors(await console.send(f"/post Mia a latte @product={path}"))
        library_error = errors(await console.send(f"/product add thing @product={path}"))
        face_error = errors(await console.send(f"/persona create-from-photo Zoe consent=yes @face={path}"))
        assert scene_error and scene_error == product_error == library_error == face_error, (
            scene_error,
            product_error,
        )
    assert await _counts(app) == before  # nothing stored
    assert "'anim.gif' is gif" in scene_error[0].lower()  # the file name quoted as given


async def test_a_post_takes_one_scene(app: App, console: ConsoleFrontEnd, tmp_path: Path) -> None:
    await run(console, "/persona create sweet Mia")
    a, b = _file(tmp_path, "a.png", png_bytes(color="red")), _file(tmp_path, "b.png", png_bytes(color="blue"))
    before = await _counts(app)
    assert "one scene image" in err(await console.send(f"/post Mia a latte @{a} @scene={b}"))
    assert await _counts(app) == before
