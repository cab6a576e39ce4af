"""Live previews in the console: the real tiny engine through the whole app (embedded queue,
delivery); each preview is saved beside the post's images and its path printed."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.app import App
from bot.console import ConsoleFrontEnd
from tests.conversation.helpers import run

LINE = re.compile(r"^👁 (\d+) %: (\S+)$", re.MULTILINE)


async def test_console_prints_each_previews_path(
    app: App, tiny_engine: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tiny_engine, "preview_min_interval_s", 0.0)  # every preview of a 4-step render
    out = io.StringIO()
    chat = ConsoleFrontEnd(app.conversation, tmp_path / "console-out", user="ann", stream=out, live=False)
    await run(chat, "/persona create sweet mia")
    await run(chat, "/post mia latte on a balcony")
    printed = out.getvalue()
    found = [(p, path) for p, path in LINE.findall(printed) if "/post-1/" in path]  # (not the portrait job's)
    assert found, printed
    percents = [int(p) for p, _ in found]
    # 25/50/75 % of a render (a fast engine may skip one; an identity retry adds a render to the job's steps)
    assert all(0 < p < 100 for p in percents) and percents[0] <= 50
    assert len(found) == len(list((tmp_path / "console-out" / "post-1").glob("preview-*.jpg")))
    for _, path in found:
        assert re.search(r"post-\d+/preview-[0-9a-f]{8}-\d\.jpg$", path), path
        assert Image.open(path).format == "JPEG"
    assert printed.rindex(found[-1][1]) < printed.index("post1-turn1-1.png")  # previews come before the result


async def test_no_preview_lines_with_previews_off(
    app: App, tiny_engine: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tiny_engine, "previews", False)
    out = io.StringIO()
    chat = ConsoleFrontEnd(app.conversation, tmp_path / "console-out", user="ann", stream=out, live=False)
    await run(chat, "/persona create sweet mia")
    await run(chat, "/post mia latte on a balcony")
    assert "👁" not in out.getvalue() and "🖼" in out.getvalue()
    assert not list((tmp_path / "console-out").rglob("preview-*"))


async def test_running_progress_links_to_the_jobs_live_page(app: App, tmp_path: Path) -> None:
    from commands.events import Progress

    chat = ConsoleFrontEnd(app.conversation, tmp_path / "console-out", user="ann", stream=io.StringIO(), live=False)
    await run(chat, "/persona create sweet mia")
    await run(chat, "/post mia latte on a balcony")
    running = [a for a in chat.actions if isinstance(a, Progress) and a.state == "running"]
    assert running and all(a.live_url for a in running)
    base = app.settings.effective_web_public_url
    for action in running:
        assert action.live_url.startswith(f"{base}/s/") and action.live_url.endswith(
            f"?next=/studio/jobs/{action.job_id}"
        )
    assert all(not a.live_url for a in chat.actions if isinstance(a, Progress) and a.state != "running")
