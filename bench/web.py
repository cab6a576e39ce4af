"""Benchmark the web studio's gallery page with 200 posts: server time and bytes sent.

    python bench/web.py                 # 200 posts, 200 page loads, a table
    python bench/web.py --posts 500 --json

One user with one persona and ``--posts`` posts (each a 1024x1024 PNG result, every other one
approved) in a SQLite database in a temporary folder; the web server (bot/web) on a free port in
this process, an aiohttp client on loopback, as a browser would ask (gzip accepted):

* cold: the first gallery load and its thumbnails (each WebP made now from its PNG);
* warm: ``--loads`` loads of ``/studio/posts``; server time is the ``Server-Timing`` header the
  server sets around its handler (database reads and template), wall time the client's;
* bytes: what one gallery visit moves over the wire (HTML + every thumbnail) against the same
  page showing full images.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# bench/ holds queue.py: take the folder off the path, or it shadows the standard library's queue
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent))

import aiohttp  # noqa: E402
from PIL import Image, ImageDraw, ImageFilter  # noqa: E402

from bot.web import WebConfig, WebFrontEnd, make_state  # noqa: E402
from commands.web_links import studio_link  # noqa: E402
from storage.blobs import BlobStore, open_blob_store  # noqa: E402
from storage.db import Database  # noqa: E402
from storage.models import ThreadStatus, TurnStatus  # noqa: E402
from storage.repository import Store  # noqa: E402
from storage.settings import load_settings, web_secret  # noqa: E402


def picture(rng: random.Random, size: int) -> bytes:
    """A render-like PNG: soft shapes over a gradient, a little grain (PNG of noise-free flat
    colour would be unrealistically small)."""
    image = Image.linear_gradient("L").resize((size, size)).convert("RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y, r = rng.randrange(size), rng.randrange(size), rng.randrange(size // 16, size // 4)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(rng.randrange(256) for _ in range(3)))
    image = image.filter(ImageFilter.GaussianBlur(6))
    grain = Image.effect_noise((size, size), 12).convert("RGB")
    image = Image.blend(image, grain, 0.08)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


async def populate(store: Store, blobs: BlobStore, posts: int, size: int) -> int:
    rng = random.Random(7)
    user = await store.user("console", "bench", "bench")
    persona = await store.create_persona(user.id, "mia", "sweet", [("sweet-a", 1.0)], seed=1)
    await store.persona_ready(persona.id, blobs.put(picture(rng, size)), [0.0] * 8)
    for n in range(posts):
        thread = await store.create_thread(
            platform="console", owner_id=user.id, persona_id=persona.id, title=f"mia: post {n}", prompt=f"post {n}"
        )
        key = blobs.put(picture(rng, size))
        turn = await store.add_turn(
            thread_id=thread.id,
            parent_id=None,
            kind="generate",
            instruction=f"post {n}",
            image_keys=[key],
            status=TurnStatus.DONE,
        )
        await store.set_current_turn(thread.id, turn.id)
        if n % 2 == 0:
            await store.set_approved(turn.id)
            await store.set_thread_status(thread.id, ThreadStatus.APPROVED)
    return user.id


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def fetch(http: aiohttp.ClientSession, url: str) -> tuple[bytes, int, float, float]:
    """Body, bytes on the wire (Content-Length as sent, compressed when it was), server ms, wall ms."""
    started = time.perf_counter()
    async with http.get(url, headers={"Accept-Encoding": "gzip"}) as response:
        assert response.status == 200, (url, response.status)
        body = await response.read()
        wire = int(response.headers.get("Content-Length") or 0) or len(body)
        server = float(response.headers["Server-Timing"].split("dur=")[1])
    return body, wire, server, (time.perf_counter() - started) * 1000


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        root = Path(tmp)
        port = 20000 + os.getpid() % 20000
        settings = load_settings(
            database_url=f"sqlite+aiosqlite:///{root / 'bench.db'}", blob_dir=root / "blobs", web_port=port
        )
        db = Database(settings.database_url)
        await db.upgrade()
        store, blobs = Store(db), open_blob_store(settings)
        user_id = await populate(store, blobs, args.posts, args.size)
        config = WebConfig.from_settings(settings)
        web = WebFrontEnd(config, make_state(config, store, blobs, None))
        await web.start()
        base = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
                async with http.get(studio_link(web_secret(settings), base, user_id)) as response:
                    assert response.status == 200
                started = time.perf_counter()
                html, html_wire, cold_server, _ = await fetch(http, f"{base}/studio/posts")
                thumbs = [part.split('"', 1)[0] for part in html.decode().split('src="')[1:]]
                assert len(thumbs) == args.posts, len(thumbs)
                thumb_bytes = 0
                for src in thumbs:
                    thumb_bytes += (await fetch(http, base + src))[1]
                cold_s = time.perf_counter() - started
                full_bytes = 0
                for src in thumbs:
                    key = src.rsplit("/", 1)[1].removesuffix(".webp")
                    full_bytes += (await fetch(http, f"{base}/studio/img/{key}"))[1]
                server, wall = [], []
                for _ in range(args.loads):
                    _, _, server_ms, wall_ms = await fetch(http, f"{base}/studio/posts")
                    server.append(server_ms)
                    wall.append(wall_ms)
        finally:
            await web.stop()
            await db.dispose()
    return {
        "posts": args.posts,
        "image_px": args.size,
        "loads": args.loads,
        "server_ms_p50": round(statistics.median(server), 2),
        "server_ms_p99": round(pct(server, 0.99), 2),
        "wall_ms_p50": round(statistics.median(wall), 2),
        "cold_first_page_server_ms": round(cold_server, 1),
        "cold_page_and_thumbnails_s": round(cold_s, 2),
        "html_bytes_uncompressed": len(html),
        "html_bytes_sent": html_wire,
        "thumbnail_bytes": thumb_bytes,
        "visit_bytes": html_wire + thumb_bytes,
        "full_image_bytes": full_bytes,
        "thumbnails_vs_full": round(thumb_bytes / full_bytes, 4) if full_bytes else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--posts", type=int, default=200)
    parser.add_argument("--loads", type=int, default=200)
    parser.add_argument("--size", type=int, default=1024, help="result image side, pixels")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for name, value in result.items():
            print(f"{name:<28} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
