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
import base64
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cachetools import LRUCache

from bot.wecom.api import CARD_BUTTONS, VIDEO_LIMIT_BYTES, WeComAPI, WeComAPIError
from commands.events import Action, Button, ChooseRole, FileOut, Images, OpenThread, Progress, Reply, ReviewRequest

log = logging.getLogger(__name__)

PROGRESS_STATES = ("queued", "running", "done", "failed", "cancelled")
#: one outgoing message, plain JSON: ``to``, ``kind`` (text, image, card, role_card, file) and its fields
Message = dict[str, Any]
REMEMBERED_JOBS = 1000


def _text(user: str, text: str, *, optional: bool = False) -> Message:
    message: Message = {"to": user, "kind": "text", "text": text}
    if optional:
        message["optional"] = True
    return message


def _told_after(action: Action, rest: Sequence[Action]) -> bool:
    """A job's final state (done, failed, cancelled) whose outcome a later action of the same
    answer tells anyway (the result images, the failure, "Cancelled ❌"): one message, not two."""
    if not isinstance(action, Progress) or action.state not in ("done", "failed", "cancelled"):
        return False
    return any(isinstance(later, Reply | Images) and later.where.user_id == action.where.user_id for later in rest)


def plain_text(text: str) -> str:
    """WeCom text messages show markdown literally: drop the ``**bold**`` markers."""
    return text.replace("**", "")


class ActionRenderer:
    """Sends actions to their users through ``api()`` (the client exists once the bot started).

    Two steps: :meth:`plan` turns actions into outgoing messages (plain JSON: what an outbox
    stores), :meth:`send` sends one. :meth:`render` does both."""

    def __init__(self, api: Callable[[], WeComAPI]) -> None:
        self._api = api
        self._progress_sent: LRUCache[str, set[str]] = LRUCache(REMEMBERED_JOBS)  # job -> states sent

    async def render(
        self, actions: Sequence[Action], *, default_user: str | None = None, raise_errors: bool = False
    ) -> None:
        for message in self.plan(actions, default_user=default_user):
            try:
                await self.send(message)
            except (WeComAPIError, OSError) as exc:
                if message.get("optional"):
                    log.info("wecom: progress message not sent (%s)", exc)
                    continue
                if raise_errors:
                    raise
                log.warning("wecom: sending a %s message failed (%s)", message["kind"], exc)

    def plan(self, actions: Sequence[Action], *, default_user: str | None = None) -> list[Message]:
        """The messages that render ``actions``, in order (optional ones may be dropped)."""
        messages: list[Message] = []
        for index, action in enumerate(actions):
            user = action.where.user_id or default_user
            if not user:
                log.warning("wecom: an action without a user was dropped")
                continue
            if _told_after(action, actions[index + 1 :]):
                continue
            if isinstance(action, ReviewRequest):  # a card to each reviewer, not to the author
                for reviewer in action.reviewers:
                    messages.extend(self._plan_review(reviewer, action))
                continue
            messages.extend(self._plan_one(user, action))
        return messages

    def _plan_one(self, user: str, action: Action) -> list[Message]:
        if isinstance(action, Images):
            return self._plan_images(user, action)
        if isinstance(action, Reply):
            text = f"{action.text_zh}\n{action.text}" if action.text_zh else action.text
            return [_text(user, plain_text(text))]
        if isinstance(action, OpenThread):
            return [_text(user, plain_text(action.text or action.title))]
        if isinstance(action, Progress):
            if action.told:  # the user was told already (the answer to their /cancel)
                return []
            text = self._progress_text(action)
            return [_text(user, text, optional=True)] if text else []
        if isinstance(action, ChooseRole):
            return [{"to": user, "kind": "role_card", "key": action.key}]
        if isinstance(action, FileOut):
            messages = [_text(user, plain_text(action.text))] if action.text else []
            data = base64.b64encode(action.data).decode("ascii")
            return [*messages, {"to": user, "kind": "file", "filename": action.filename or "export.zip", "data": data}]
        log.warning("wecom: no renderer for %s", type(action).__name__)
        return []

    def _plan_images(self, user: str, action: Images) -> list[Message]:
        buttons = [b.value if isinstance(b, Button) else str(b) for b in action.buttons]
        card_buttons = [name for name in buttons if name in CARD_BUTTONS]
        lines = [plain_text(action.text).strip()] + [plain_text(i.caption).strip() for i in action.images]
        summary = "\n".join(line for line in lines if line)
        short = len(summary) <= 44 and "\n" not in summary
        messages: list[Message] = []
        if summary and (not card_buttons or not short):
            messages.append(_text(user, summary))
        clip = action.clip.fitting(VIDEO_LIMIT_BYTES) if action.clip is not None else None
        if action.clip is not None and clip is not None:  # a video message instead of the poster
            path, _size = clip
            video = {"path": str(path), "filename": action.clip.filename, "description": action.clip.caption}
            messages.append({"to": user, "kind": "video", "title": f"#{action.turn_id}", **video})
        for image in action.images if clip is None else ():
            filename = image.filename or Path(image.path).name
            messages.append({"to": user, "kind": "image", "path": image.path, "filename": filename})
        if card_buttons:
            desc = summary if short and summary else "点击按钮：通过 / 重来 / 撤销"
            title = f"结果 #{action.turn_id} · Result"
            card = {"turn_id": action.turn_id, "title": title, "desc": desc, "buttons": card_buttons}
            messages.append({"to": user, "kind": "card", **card})
        return messages

    async def send(self, message: Message) -> None:
        """Send one planned message; raises :class:`WeComAPIError` or ``OSError`` when it could not."""
        api, user, kind = self._api(), message["to"], message["kind"]
        if kind == "text":
            await api.send_text(user, message["text"], optional=bool(message.get("optional")))
        elif kind == "image":
            data = await asyncio.to_thread(Path(message["path"]).read_bytes)
            await api.send_image(user, await api.upload_image(data, message["filename"]))
        elif kind == "video":
            data = await asyncio.to_thread(Path(message["path"]).read_bytes)
            media_id = await api.upload_media(data, message["filename"], "video", "video/mp4")
            await api.send_video(user, media_id, title=message["title"], description=message["description"])
        elif kind == "card":
            card = {name: message[name] for name in ("turn_id", "title", "desc", "buttons")}
            await api.send_card(user, **card)
        elif kind == "role_card":
            await api.send_role_card(
                user, key=message["key"], title="这张图是？What is this image?", desc="用于下一次发帖或修改"
            )
        elif kind == "file":
            data = base64.b64decode(message["data"])
            await api.send_file(user, await api.upload_media(data, message["filename"], "file"))
        else:
            log.warning("wecom: unknown outgoing message kind %r dropped", kind)

    def _plan_review(self, reviewer: str, action: ReviewRequest) -> list[Message]:
        """The submitted images and a card with 通过 / 退回 (退回 asks for the reason: 退回 <原因>)."""
        messages = [_text(reviewer, plain_text(action.text))]
        for image in action.images:
            filename = image.filename or Path(image.path).name
            messages.append({"to": reviewer, "kind": "image", "path": image.path, "filename": filename})
        card = {
            "turn_id": action.turn_id,
            "title": f"审核 #{action.turn_id} · Review",
            "desc": "通过 / 退回（退回后发送：退回 <原因>）",
            "buttons": ["approve", "reject"],
        }
        return [*messages, {"to": reviewer, "kind": "card", **card}]

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
