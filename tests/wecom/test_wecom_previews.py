"""WeCom and live previews: no preview messages (a card cannot be updated again and again, and
about 30 messages a minute per user matter more); the "started" message links to the live page."""

from __future__ import annotations

from bot.wecom.render import ActionRenderer
from commands.events import PreviewOut, Progress, Where

WHERE = Where(platform="wecom", user_id="zhangsan", thread_db_id=3)
LINK = "https://studio.example.com/s/token?next=/studio/jobs/j1"


def _running(step: int, **fields: object) -> Progress:
    return Progress(where=WHERE, job_id="j1", state="running", step=step, total=8, **fields)  # type: ignore[arg-type]


def test_the_started_message_carries_the_live_link_and_no_preview_is_sent() -> None:
    renderer = ActionRenderer(api=lambda: None)  # type: ignore[arg-type, return-value]
    first = renderer._progress_text(_running(0, live_url=LINK))
    assert first is not None and first.startswith("🎨 开始生成") and first.endswith(f"\n实时预览 Live preview: {LINK}")
    preview = PreviewOut(1, 25, b"\xff\xd8jpeg", 64, 48)
    assert renderer._progress_text(_running(2, live_url=LINK, preview=preview)) is None  # nothing per step
    without = ActionRenderer(api=lambda: None)._progress_text(_running(0))  # type: ignore[arg-type, return-value]
    assert without is not None and "Live" not in without
