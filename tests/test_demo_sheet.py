"""The demo's drawn references and its contact sheet, which shows each turn's references."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from bot.demo import contact_sheet, demo_settings, draw_references
from storage.blobs import BlobStore
from storage.models import Turn
from storage.settings import load_settings


def test_demo_model_is_passed_through_and_references_are_drawn(tmp_path: Path) -> None:
    base = load_settings(_env_file=None)
    assert demo_settings(base, tmp_path, "tiny-klein").engine_model == "tiny-klein"
    assert demo_settings(base, tmp_path).engine_model == "tiny"
    folder = draw_references(tmp_path / "refs")
    for name in ("mug.png", "cafe.png"):
        with Image.open(folder / name) as image:
            assert min(image.size) >= 64  # klein refuses references under 64 px a side
            assert len(image.getcolors(1 << 16) or []) > 2  # a drawing, not a blank


def test_contact_sheet_shows_each_turns_references(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    result = blobs.put_image(Image.new("RGB", (64, 64), "gray"))
    mug = blobs.put_image(Image.new("RGB", (64, 64), (200, 30, 40)))
    with_ref = Turn(id=1, kind="generate", instruction="x", image_keys=[result], identity_scores=[None], approved=False)
    with_ref.references = [{"role": "product", "key": mug, "name": "mug"}]
    without = Turn(id=2, kind="edit", instruction="y", image_keys=[result], identity_scores=[None], approved=False)
    without.references = []
    sheet = contact_sheet([with_ref, without], blobs, current_id=2, tile=64)
    plain = contact_sheet([without], blobs, current_id=2, tile=64)
    assert sheet.width > plain.width  # a column of references
    x = 8 + 64 + 8 + 16 + 5  # inside the first reference thumbnail of row 1
    assert sheet.getpixel((x, 8 + 5)) == (200, 30, 40)
    assert sheet.getpixel((x, 8 + (64 + 52 + 8) + 5)) == (255, 255, 255)  # row 2 used none
