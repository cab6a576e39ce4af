"""``persona-studio demo``: the whole loop, unattended, offline.

Runs on the embedded defaults whatever the environment says — tiny model, SQLite, in-process
queue, a generated LoRA library — all inside ``--out DIR``: create a persona, a post of two
images, two edits, an undo, a regenerate, an approve and an export. Writes the images, a
contact sheet of the thread's turns and manifest.json into DIR.
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
    "/post Mia count=2 sipping an iced latte in a sunny café, film photo",
    "hold the cup a little higher",
    "same outfit, now on a rooftop terrace at sunset",
    "/undo",
    "/regen",
    "/approve",
    "/history",
    "/export",
)


def demo_settings(base: Settings, out: Path) -> Settings:
    """The embedded defaults, kept inside ``out`` so a demo never touches real data."""
    return load_settings(
        database_url=f"sqlite+aiosqlite:///{(out / 'demo.db').resolve()}",
        blob_dir=out / "blobs",
        lora_dir=out / "loras",
        redis_url=None,
        engine_model="tiny",
        engine_device="cpu",
        face_backend=base.face_backend,
        face_model_dir=base.face_model_dir,
    )


async def run_demo(base: Settings, out: Path) -> int:
    from bot.app import build_app

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("demo.db", "demo.db-wal", "demo.db-shm"):
        (out / stale).unlink(missing_ok=True)
    settings = demo_settings(base, out)
    started = time.monotonic()
    app = await build_app(settings)
    front = ConsoleFrontEnd(app.conversation, out / "images", user="demo")
    try:
        for line in SCRIPT:
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


def contact_sheet(turns: list[Turn], blobs: object, current_id: int | None, tile: int = 192) -> Image.Image:
    """One row per turn: its images, each with the turn, instruction and identity score underneath."""
    font = ImageFont.load_default(size=13)
    label_h = 52
    columns = max((len(t.image_keys) for t in turns), default=1) or 1
    sheet = Image.new("RGB", (columns * (tile + 8) + 8, len(turns) * (tile + label_h + 8) + 8), "white")
    draw = ImageDraw.Draw(sheet)

    def fit(text: str) -> str:
        while text and draw.textlength(text, font=font) > tile:
            text = text[:-2] + "…"
        return text

    for row, turn in enumerate(turns):
        y = 8 + row * (tile + label_h + 8)
        flags = (" [approved]" if turn.approved else "") + (" <- current" if turn.id == current_id else "")
        for col, key in enumerate(turn.image_keys):
            image = blobs.open_image(key).convert("RGB")  # type: ignore[attr-defined]
            image = image.resize((tile, round(tile * image.height / image.width)), Image.Resampling.NEAREST)
            x = 8 + col * (tile + 8)
            sheet.paste(image.crop((0, 0, tile, tile)), (x, y))
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
    return sheet
