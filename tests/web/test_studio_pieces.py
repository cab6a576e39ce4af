"""The studio's pieces: /gallery in chat (and 画廊), the kept secret, thumbnails made once with
caching headers, the admin view and its cancel, and `persona-studio web` as a user starts it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

from commands.events import Reply
from commands.parser import parse_text
from commands.web_links import BadLink, read_token, studio_link
from storage.models import JobStatus
from storage.settings import load_settings, web_secret
from tests.conversation.helpers import queued
from tests.services import free_port
from tests.web.conftest import Studio, make_posts

ROOT = Path(__file__).resolve().parents[2]


def test_the_secret_is_made_once_and_kept_with_the_data(tmp_path: Path) -> None:
    settings = load_settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'db' / 'a.db'}")
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(web_secret(settings))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1 and len(results[0]) == 64  # every process of the installation agrees
    assert (tmp_path / "db" / "web-secret").read_text().strip() == results[0]
    assert web_secret(load_settings(database_url=settings.database_url)) == results[0]
    assert web_secret(load_settings(web_secret="s" * 20)) == "s" * 20
    link = studio_link(results[0], "https://studio.example.com/", 7)
    assert link.startswith("https://studio.example.com/s/")
    assert read_token(results[0], link.rsplit("/", 1)[1], 3600).user_id == 7
    try:
        read_token("another-installation-secret", link.rsplit("/", 1)[1], 3600)
        raise AssertionError("a link of another installation was accepted")
    except BadLink as exc:
        assert str(exc) == "invalid or expired link"


async def test_gallery_in_chat_is_private_and_has_a_wecom_alias(studio: Studio) -> None:
    assert parse_text("画廊").command == "gallery"
    link = await studio.link("ann")
    assert link.startswith(studio.settings.effective_web_public_url + "/s/")
    chat = studio.console("ann")
    actions = await chat.send("画廊")
    assert [a.private for a in actions if isinstance(a, Reply)] == [True]
    help_text = (await chat.send("/help"))[0].text  # type: ignore[union-attr]
    assert "/help" in help_text and "/gallery" in help_text


async def test_thumbnails_are_made_once_and_cached(studio: Studio, http: aiohttp.ClientSession) -> None:
    await make_posts(studio, "ann", "mia", ["latte on a balcony"])
    async with http.get(await studio.link("ann")) as response:
        assert response.status == 200
        html = await response.text()
    src = html.split('src="/studio/thumb/', 1)[1].split('"', 1)[0]
    key = src.removesuffix(".webp")
    for _ in range(2):
        async with http.get(f"{studio.base}/studio/thumb/{src}") as response:
            assert response.status == 200 and response.headers["Content-Type"] == "image/webp"
            assert "immutable" in response.headers["Cache-Control"] and response.headers["ETag"] == f'"{key}"'
            assert (await response.read())[8:12] == b"WEBP"
    assert studio.web.state.thumbnails.made == 1
    async with http.get(f"{studio.base}/studio/thumb/{src}", headers={"If-None-Match": f'"{key}"'}) as response:
        assert response.status == 304
    async with http.get(f"{studio.base}/studio/img/{key}") as response:
        assert response.status == 200 and response.headers["Content-Type"] == "image/png"
        assert (await response.read())[:4] == b"\x89PNG"
    async with http.get(f"{studio.base}/studio/posts?status=bogus") as response:
        assert response.status == 400


async def test_admin_sees_the_queue_and_cancels_a_waiting_job(studio: Studio, browser: Any) -> None:
    await make_posts(studio, "ann", "mia", [])
    studio.engine.release.clear()  # renders hold on: one runs, the next waits
    chat = studio.console("ann")
    running = queued(await chat.send("/post mia first"))[0]
    waiting = queued(await chat.send("/post mia second"))[0]
    page = await browser.new_page()
    response = await page.goto(await studio.link("ann"))
    assert response is not None and response.status == 200
    response = await page.goto(f"{studio.base}/studio/admin")
    assert response is not None and response.status == 403  # ann is no admin
    await page.goto(await studio.link("boss"))
    await page.goto(f"{studio.base}/studio/admin")
    assert await page.locator(f"#waiting tr[data-job='{waiting}']").count() == 1
    assert await page.locator(f"#running tr[data-job='{running}']").count() == 1
    await page.click(f"#waiting tr[data-job='{waiting}'] button")
    assert "cancelling" in await page.locator(".notice").inner_text()
    job = await studio.app.store.get_job(waiting)
    assert job is not None and job.status == JobStatus.CANCELLED
    # a cancel without the form's token (another site's form) changes nothing
    forged = await page.request.post(f"{studio.base}/studio/admin/jobs/{running}/cancel", form={"csrf": "x"})
    assert forged.status == 403
    studio.engine.release.set()
    await chat.wait_job(running)
    job = await studio.app.store.get_job(running)
    assert job is not None and job.status == JobStatus.DONE
    await page.close()


def test_persona_studio_web_serves_health_and_readiness(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "WEB_PORT": str(port),
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'w.db'}",
    }
    env.pop("REDIS_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "web"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "the web server did not start"
                time.sleep(0.1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            assert response.status == 200
        assert (tmp_path / "web-secret").exists()
    finally:
        process.terminate()
        process.wait(timeout=30)
