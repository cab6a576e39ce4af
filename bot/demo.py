"""``persona-studio demo``: the whole loop, unattended, offline.

Runs on the embedded defaults whatever the environment says — tiny model, SQLite, in-process
queue, a generated LoRA library — all inside ``--out DIR``: create a persona, add a product to
the library, a post of two images with that product and a scene image (both drawn here), two
edits, an undo, a regenerate, an approve and an export. Writes the images, a contact sheet of
the thread's turns with the references each used, and manifest.json into DIR. ``--model``
picks the engine family's tiny model (``tiny``: FLUX.1 Kontext; ``tiny-klein``: FLUX.2 [klein]).
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from bot.console import ConsoleFrontEnd
from commands.events import Action, Progress
from storage.models import Turn
from storage.settings import Settings, load_settings

SCRIPT = (
    "/persona create sweet Mia",
    "/product add mug @product={refs}/mug.png",
    "/post Mia count=2 product=mug @scene={refs}/cafe.png sipping an iced latte in a sunny café, film photo",
    "hold the cup a little higher",
    "same outfit, now on a rooftop terrace at sunset",
    "/undo",
    "/regen",
    "/approve",
    "/history",
    "/export",
)


def demo_settings(base: Settings, out: Path, model: str = "tiny") -> Settings:
    """The embedded defaults, kept inside ``out`` so a demo never touches real data."""
    return load_settings(
        database_url=f"sqlite+aiosqlite:///{(out / 'demo.db').resolve()}",
        blob_dir=out / "blobs",
        lora_dir=out / "loras",
        redis_url=None,
        engine_model=model,
        engine_device="cpu",
        face_backend=base.face_backend,
        face_model_dir=base.face_model_dir,
    )


async def run_demo(base: Settings, out: Path, model: str = "tiny") -> int:
    from bot.app import build_app

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("demo.db", "demo.db-wal", "demo.db-shm"):
        (out / stale).unlink(missing_ok=True)
    settings = demo_settings(base, out, model)
    refs = draw_references(out / "references")
    started = time.monotonic()
    app = await build_app(settings)
    front = ConsoleFrontEnd(app.conversation, out / "images", user="demo")
    try:
        for line in (line.format(refs=refs) for line in SCRIPT):
            print(f"\ndemo> {line}")
            actions = await front.send(line)
            for job_id in _queued_jobs(actions):
                await front.wait_job(job_id)
        thread_id = (await app.store.get_user((await app.store.user("console", "demo")).id)).current_thread_id
        assert thread_id is not None, "the demo post was not created"
        thread = await app.store.get_thread(thread_id)
        turns = await app.store.turns(thread.id)
        export = await app.conversation.export_zip(thread)
        (out / "export.zip").write_bytes(export)
        with zipfile.ZipFile(io.BytesIO(export)) as archive:
            manifest = json.loads(archive.read("manifest.json"))
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
        sheet = contact_sheet(turns, app.blobs, thread.current_turn_id)
        print(f"\nengine model: {model}")
        sheet.save(out / "contact-sheet.png")
    finally:
        await app.close()
    print(f"\nDemo finished in {time.monotonic() - started:.1f}s. Written to {out.resolve()}:")
    print(f"  images:        {(out / 'images').resolve()} ({len(front.saved)} files)")
    print(f"  contact sheet: {(out / 'contact-sheet.png').resolve()}")
    print(f"  manifest:      {(out / 'manifest.json').resolve()}")
    print(f"  export:        {(out / 'export.zip').resolve()}")
    return 0


def _queued_jobs(actions: list[Action]) -> list[str]:
    return [a.job_id for a in actions if isinstance(a, Progress) and a.state == "queued"]


def draw_references(folder: Path) -> Path:
    """A product (a red mug) and a scene (a café corner), drawn: the demo ships no image files."""
    folder.mkdir(parents=True, exist_ok=True)
    mug = Image.new("RGB", (256, 256), (245, 245, 240))
    pen = ImageDraw.Draw(mug)
    pen.rounded_rectangle((70, 70, 170, 200), radius=14, fill=(200, 30, 40))
    pen.arc((150, 100, 210, 170), start=270, end=90, fill=(200, 30, 40), width=14)
    pen.ellipse((70, 60, 170, 84), fill=(120, 60, 30))  # coffee
    mug.save(folder / "mug.png")
    cafe = Image.new("RGB", (256, 256), (230, 210, 180))
    pen = ImageDraw.Draw(cafe)
    pen.rectangle((0, 170, 256, 256), fill=(140, 100, 70))  # table
    pen.rectangle((30, 30, 160, 140), fill=(170, 210, 240), outline=(90, 70, 50), width=6)  # window
    pen.ellipse((180, 40, 240, 130), fill=(60, 140, 70))  # a plant
    cafe.save(folder / "cafe.png")
    return folder


def contact_sheet(turns: list[Turn], blobs: object, current_id: int | None, tile: int = 192) -> Image.Image:
    """One row per turn: its images, each with the turn, instruction and identity score underneath,
    then the references the turn used (smaller, each with its role and library name)."""
    font = ImageFont.load_default(size=13)
    label_h = 52
    thumb = tile // 2
    columns = max((len(t.image_keys) for t in turns), default=1) or 1
    ref_columns = max((len(t.references or []) for t in turns), default=0)
    width = columns * (tile + 8) + 8 + ref_columns * (thumb + 8) + (16 if ref_columns else 0)
    sheet = Image.new("RGB", (width, len(turns) * (tile + label_h + 8) + 8), "white")
    draw = ImageDraw.Draw(sheet)

    def fit(text: str, room: int = tile) -> str:
        while text and draw.textlength(text, font=font) > room:
            text = text[:-2] + "…"
        return text

    for row, turn in enumerate(turns):
        y = 8 + row * (tile + label_h + 8)
        flags = (" [approved]" if turn.approved else "") + (" <- current" if turn.id == current_id else "")
        for col, key in enumerate(turn.image_keys):
            image = blobs.open_image(key).convert("RGB")  # type: ignore[attr-defined]
            image = image.resize((tile, round(tile * image.height / image.width)), Image.Resampling.NEAREST)
            x = 8 + col * (tile + 8)
            sheet.paste(image.crop((0, 0, tile, min(tile, image.height))), (x, y))
            scores = turn.identity_scores or []
            score = scores[col] if col < len(scores) else None
            lines = (
                f"#{turn.id} {turn.kind}{flags}",
                turn.instruction or "",
                "identity n/a" if score is None else f"identity {score:.2f}",
            )
            for index, line in enumerate(lines):
                draw.text(
                    (x, y + tile + 2 + 16 * index), fit(line), fill="black" if index != 1 else "dimgray", font=font
                )
        left = 8 + columns * (tile + 8) + 16
        for col, ref in enumerate(turn.references or []):
            image = blobs.open_image(ref["key"]).convert("RGB")  # type: ignore[attr-defined]
            image.thumbnail((thumb, thumb))
            x = left + col * (thumb + 8)
            sheet.paste(image, (x, y))
            label = f"{ref['role']} {ref.get('name') or ''}".strip()
            draw.text((x, y + thumb + 2), fit(label, thumb), fill="darkblue", font=font)
            draw.text((x, y + thumb + 18), fit(str(ref["key"])[:10], thumb), fill="gray", font=font)
    return sheet
