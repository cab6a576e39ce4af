"""Issue 20 item 14, the small ones in chat: names are taken in NFC (a decomposed É is one name
at create and at show), look-alike names (Latin written in Cyrillic letters, mixed alphabets) and
names of dots only are refused; "/thread <5,000 digits>" is not echoed back. (The refusal to
approve a failed turn or one still rendering: test_hostile_inputs.py.)"""

from __future__ import annotations

from bot.app import App
from bot.console import ConsoleFrontEnd
from tests.conversation.conftest import png_bytes
from tests.conversation.helpers import errors, run


async def test_names_are_one_alphabet_in_nfc(app: App, console: ConsoleFrontEnd, tmp_path) -> None:
    decomposed = "E\u0301lodie"
    created = await run(console, f"/persona create sweet {decomposed}")
    assert not errors(created), errors(created)
    shown = await console.send("/persona show Élodie")
    assert not errors(shown) and "Élodie" in " ".join(getattr(a, "text", "") for a in shown)
    user = await app.store.user("console", "ann")
    assert [p.name for p in await app.store.list_personas(user.id)] == ["Élodie"]  # stored composed

    mug = tmp_path / "mug.png"
    mug.write_bytes(png_bytes(color="white"))
    before = await app.store.list_products((await app.store.user("console", "ann")).id)
    for name in ("m\u0443g", "\u043cug", "сор", "рое", ".", "..", "- _"):  # mixed, look-alike, dots
        refused = errors(await console.send(f"/product add {name} @product={mug}"))
        assert refused, name
    assert await app.store.list_products((await app.store.user("console", "ann")).id) == before
    assert not errors(await console.send(f"/product add mug @product={mug}"))
    assert not errors(await console.send(f"/product add кружка @product={mug}"))  # Cyrillic, not look-alike


async def test_a_huge_post_number_is_not_echoed(console: ConsoleFrontEnd) -> None:
    refused = errors(await console.send("/thread " + "7" * 5000))
    assert refused and len(refused[0]) < 200, len(refused[0]) if refused else None
    assert "no post #12 " in errors(await console.send("/thread 12"))[0]
