"""Actions as WeCom messages: text, images, clips (video messages), files, and a result card with
通过 / 重来 / 撤销.

Everything goes out through the API (:mod:`bot.wecom.api`). Progress is sent once per state
(queued, started, done/failed/cancelled), never per step, to stay within about 30 messages a
minute per user; progress messages are optional: they are skipped near the send limit and their
failures are logged, never raised. Live previews are never sent (a card cannot be updated again
and again): the "started" message carries a link to the job's live page in the web studio.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from cachetools import LRUCache

from bot.wecom.api import CARD_BUTTONS, VIDEO_LIMIT_BYTES, WeComAPI, WeComAPIError
from commands.events import Action, Button, ChooseRole, FileOut, Images, OpenThread, Progress, Reply, ReviewRequest

log = logging.getLogger(__name__)

PROGRESS_STATES = ("queued", "running", "done", "failed", "cancelled")
REMEMBERED_JOBS = 1000


def plain_text(text: str) -> str:
    """WeCom text messages show markdown literally: drop the ``**bold**`` markers."""
    return text.replace("**", "")


class ActionRenderer:
    """Sends actions to their users through ``api()`` (the client exists once the bot started)."""

    def __init__(self, api: Callable[[], WeComAPI]) -> None:
        self._api = api
        self._progress_sent: LRUCache[str, set[str]] = LRUCache(REMEMBERED_JOBS)  # job -> states sent

    async def render(
        self, actions: Sequence[Action], *, default_user: str | None = None, raise_errors: bool = False
    ) -> None:
        for action in actions:
            user = action.where.user_id or default_user
            if not user:
                log.warning("wecom: an action without a user was dropped")
                continue
            try:
                if isinstance(action, ReviewRequest):  # a card to each reviewer, not to the author
                    for reviewer in action.reviewers:
                        await self._render_review(reviewer, action)
                    continue
                await self._render_one(user, action)
            except (WeComAPIError, OSError) as exc:
                if isinstance(action, Progress):
                    log.info("wecom: progress message not sent (%s)", exc)
                    continue
                if raise_errors:
                    raise
                log.warning("wecom: sending a %s failed (%s)", type(action).__name__, exc)

    async def _render_one(self, user: str, action: Action) -> None:
        api = self._api()
        if isinstance(action, Images):
            await self._render_images(user, action)
        elif isinstance(action, Reply):
            await api.send_text(user, plain_text(action.text))
        elif isinstance(action, OpenThread):
            await api.send_text(user, plain_text(action.text or action.title))
        elif isinstance(action, Progress):
            text = self._progress_text(action)
            if text:
                await api.send_text(user, text, optional=True)
        elif isinstance(action, ChooseRole):
            await api.send_role_card(
                user, key=action.key, title="这张图是？What is this image?", desc="用于下一次发帖或修改"
            )
        elif isinstance(action, FileOut):
            if action.text:
                await api.send_text(user, plain_text(action.text))
            media_id = await api.upload_media(action.data, action.filename or "export.zip", "file")
            await api.send_file(user, media_id)
        else:
            log.warning("wecom: no renderer for %s", type(action).__name__)

    async def _render_images(self, user: str, action: Images) -> None:
        api = self._api()
        buttons = [b.value if isinstance(b, Button) else str(b) for b in action.buttons]
        card_buttons = [name for name in buttons if name in CARD_BUTTONS]
        lines = [plain_text(action.text).strip()] + [plain_text(i.caption).strip() for i in action.images]
        summary = "\n".join(line for line in lines if line)
        short = len(summary) <= 44 and "\n" not in summary
        if summary and (not card_buttons or not short):
            await api.send_text(user, summary)
        clip = action.clip.fitting(VIDEO_LIMIT_BYTES) if action.clip is not None else None
        if action.clip is not None and clip is not None:  # a video message instead of the poster
            path, _size = clip
            data = await asyncio.to_thread(Path(path).read_bytes)
            media_id = await api.upload_media(data, action.clip.filename, "video", "video/mp4")
            await api.send_video(user, media_id, title=f"#{action.turn_id}", description=action.clip.caption)
        for image in action.images if clip is None else ():
            data = await asyncio.to_thread(Path(image.path).read_bytes)
            media_id = await api.upload_image(data, image.filename or Path(image.path).name)
            await api.send_image(user, media_id)
        if card_buttons:
            desc = summary if short and summary else "点击按钮：通过 / 重来 / 撤销"
            await api.send_card(
                user, turn_id=action.turn_id, title=f"结果 #{action.turn_id} · Result", desc=desc, buttons=card_buttons
            )

    async def _render_review(self, reviewer: str, action: ReviewRequest) -> None:
        """The submitted images and a card with 通过 / 退回 (退回 asks for the reason: 退回 <原因>)."""
        api = self._api()
        await api.send_text(reviewer, plain_text(action.text))
        for image in action.images:
            data = await asyncio.to_thread(Path(image.path).read_bytes)
            await api.send_image(reviewer, await api.upload_image(data, image.filename or Path(image.path).name))
        await api.send_card(
            reviewer,
            turn_id=action.turn_id,
            title=f"审核 #{action.turn_id} · Review",
            desc="通过 / 退回（退回后发送：退回 <原因>）",
            buttons=("approve", "reject"),
        )

    def _progress_text(self, action: Progress) -> str | None:
        """Text for the first Progress of each state of a job; None for repeats (per-step running)."""
        state = action.state
        if state not in PROGRESS_STATES:
            return None
        job = action.job_id or f"{action.where.user_id}:{action.where.thread_db_id}"
        sent = self._progress_sent.get(job)
        if sent is None:
            sent = self._progress_sent[job] = set()
        if state in sent:
            return None
        sent.add(state)
        if action.text:
            return action.text
        if state == "queued":
            ahead = f"，前面还有 {action.position} 个" if action.position else ""
            return f"⏳ 已排队{ahead}。Queued."
        if state == "running":
            eta = f"，预计 {round(action.eta_s)} 秒" if action.eta_s else ""
            live = f"\n实时预览 Live preview: {action.live_url}" if action.live_url else ""
            return f"🎨 开始生成{eta}。Started.{live}"
        if state == "done":
            return "✅ 生成完成。Done."
        if state == "failed":
            return "⚠️ 生成失败。Failed."
        return "❌ 已取消。Cancelled."
