"""The console front end: the same conversation in a terminal (``persona-studio chat``).

Lines are parsed with the shared text grammar; reactions are typed as commands (/approve) or as
their emoji. Images are copied out of the blob store into ``out_dir`` and their paths printed.
The console has no platform threads: like WeCom, each user has a current post (/threads,
/thread <id> switch between them). :class:`ConsoleFrontEnd` is a :class:`bot.frontend.FrontEnd`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shlex
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from bot.frontend import ConversationClient, FrontEndBase
from commands.conversation import Conversation
from commands.events import (
    BUTTON_EMOJI,
    Action,
    Attachment,
    ChooseRole,
    Event,
    FileOut,
    Images,
    OpenThread,
    Progress,
    Reply,
    ReviewRequest,
    Where,
)
from commands.parser import parse_text
from commands.texts import progress_bar
from engine.jobs.events import FINISHED_STATES
from engine.specs import ReferenceRole

PLATFORM = "console"
log = logging.getLogger(__name__)


class ConsoleFrontEnd(ConversationClient, FrontEndBase):
    """One console user's conversation: typed lines in, actions printed (images saved to files).

    It takes the whole :class:`~commands.conversation.Conversation` (not only the port): a
    script waits for its jobs' deliveries to be recorded (:meth:`wait_job`)."""

    platform = PLATFORM

    def __init__(
        self,
        conversation: Conversation,
        out_dir: Path,
        *,
        user: str = "console",
        stream: TextIO | None = None,
        live: bool | None = None,
        workspace: str = "",
    ) -> None:
        super().__init__()
        self.conversation = conversation
        self.out_dir = Path(out_dir)
        self.user = user
        #: the console's workspace ("" = ``local``, shared by every console user of this database)
        self.workspace = workspace
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live  # \r progress bars on a terminal
        self.saved: list[Path] = []
        self.actions: list[Action] = []
        self._finished: dict[str, asyncio.Event] = {}
        self._bar_open = False
        self.register_deliverer()  # at once: tests send without start()

    # -- lifecycle ---------------------------------------------------------------------------
    async def open(self) -> None:
        await self.tasks.open()
        await self.deliver_pending()

    async def close(self) -> None:
        await self.tasks.close()

    # -- input -------------------------------------------------------------------------------
    async def send(self, line: str) -> list[Action]:
        """Handle one typed line; render and return the immediate actions."""
        try:
            text, attachments = _attachments(line)
        except OSError as exc:  # an @file that cannot be read: say so, change nothing
            reason = exc.strerror or type(exc).__name__
            actions: list[Action] = [
                Reply(where=Where(platform=PLATFORM, user_id=self.user), text=f"⚠️ Could not read that file: {reason}")
            ]
            await self.render(actions)
            return actions
        parsed = parse_text(text)
        event = Event(
            platform=PLATFORM,
            user_id=self.user,
            workspace=self.workspace,
            user_name=self.user,
            kind=parsed.kind,
            command=parsed.command,
            args=parsed.args,
            text=parsed.args if parsed.command is None else "",
            attachments=attachments,
        )
        actions = await self.conversation.handle(event)
        await self.render(actions)
        return actions

    # -- output ------------------------------------------------------------------------------
    async def deliver(self, actions: Sequence[Action]) -> None:
        await self.render(actions)
        for action in actions:
            if isinstance(action, Progress) and action.state in FINISHED_STATES:
                self._event(action.job_id).set()

    async def wait_job(self, job_id: str, limit_s: float = 300.0) -> None:
        """Wait until a job's result (or failure) has been delivered here and recorded as such."""
        await asyncio.wait_for(self._event(job_id).wait(), limit_s)
        await self.conversation.delivery.settled(job_id)

    async def render(self, actions: Sequence[Action]) -> None:
        for action in actions:
            self.actions.append(action)
            if isinstance(action, Progress):
                self._progress(action)
            elif isinstance(action, Images) and action.clip is not None:
                self._line(action.text)
                clip = action.clip
                path = self._save(clip.path, action.where.thread_db_id, clip.filename)
                poster = self._save(clip.poster_path, action.where.thread_db_id, clip.filename[:-4] + "-poster.png")
                self._line(f"  🎬 {path}  ({clip.frames} frames, {clip.size // 1024} KB; poster {poster.name})")
                if action.buttons:
                    hints = "  ".join(f"{BUTTON_EMOJI[b]} /{b.value}" for b in action.buttons)
                    self._line(f"  {hints}")
            elif isinstance(action, Images):
                self._line(action.text)
                for image in action.images:
                    path = self._save(image.path, action.where.thread_db_id, image.filename)
                    caption = f"  ({image.caption})" if image.caption else ""
                    self._line(f"  🖼  {path}{caption}")
                if action.buttons:
                    hints = "  ".join(f"{BUTTON_EMOJI[b]} /{b.value}" for b in action.buttons)
                    self._line(f"  {hints}")
            elif isinstance(action, FileOut):
                target = self.out_dir / action.filename
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(action.data)
                self.saved.append(target)
                self._line(f"{action.text}\n  📦 {target}")
            elif isinstance(action, Reply) and action.where.user_id not in ("", self.user):
                self._line(f"→ {action.where.user_id}: {action.text}")  # to another user of this console
            elif isinstance(action, OpenThread | Reply):
                self._line(action.text)
            elif isinstance(action, ReviewRequest):
                self._line(f"→ {', '.join(action.reviewers)}: {action.text}\n  ✅ /approve  ↩️ /reject <reason>")
            elif isinstance(action, ChooseRole):
                self._line(f"{action.text}\n  /reference product|scene|face {action.key}")

    def _progress(self, action: Progress) -> None:
        if action.preview is not None:  # a live preview: a file beside the post's images
            folder = self.out_dir / (f"post-{action.where.thread_db_id}" if action.where.thread_db_id else "previews")
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / f"preview-{action.job_id[:8]}-{action.preview.seq}.jpg"
            target.write_bytes(action.preview.jpeg)
            self._line(f"👁 {action.preview.percent} %: {target}")
        if action.state == "queued":
            ahead = f", {action.position} ahead" if action.position else ""
            self._line(f"⏳ queued{ahead}")
        elif action.state == "running" and action.total:
            eta = f" ETA {action.eta_s:.0f}s" if action.eta_s is not None else ""
            text = f"⚙️  {progress_bar(action.step, action.total)}{eta}"
            if self.live:
                self.stream.write("\r" + text + " " * 8)
                self.stream.flush()
                self._bar_open = True
            elif action.step == action.total:
                self._line(text)

    def _line(self, text: str) -> None:
        if self._bar_open:
            self.stream.write("\n")
            self._bar_open = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def _save(self, blob_path: str, thread_db_id: int | None, filename: str) -> Path:
        folder = self.out_dir / (f"post-{thread_db_id}" if thread_db_id else "personas")
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / filename
        shutil.copyfile(blob_path, target)
        self.saved.append(target)
        return target

    def finished(self, job_id: str) -> bool:
        return self._event(job_id).is_set()

    def _event(self, job_id: str) -> asyncio.Event:
        return self._finished.setdefault(job_id, asyncio.Event())


#: ``@<role>=path`` attaches with a role; a bare ``@path`` is a scene image
_ROLE_TOKEN = re.compile(r"^@(product|scene|face|mask)=(.+)$")


def _attachments(line: str) -> tuple[str, tuple[Attachment, ...]]:
    """``@path/to/scene.png`` words attach that file (the console's upload) as a scene image;
    ``@product=path``, ``@scene=path`` and ``@face=path`` attach it with that role; ``@mask=path`` is
    the mask of a region edit (white = change)."""
    words: list[str] = []
    files: list[Attachment] = []
    try:
        tokens = shlex.split(line, posix=True) if "@" in line else None
    except ValueError:
        tokens = None
    if tokens is None:
        return line, ()
    for token in tokens:
        role, path = ReferenceRole.SCENE.value, None
        if match := _ROLE_TOKEN.match(token):
            role, path = match.group(1), Path(match.group(2)).expanduser()
        elif token.startswith("@"):
            path = Path(token[1:]).expanduser()
        if path is not None and path.is_file():
            files.append(Attachment(filename=path.name, data=path.read_bytes(), role=role))
        else:
            words.append(token)
    return " ".join(words), tuple(files)


async def run_chat(settings: object, *, user: str = "console", out_dir: Path = Path("console-out")) -> int:
    from bot.app import build_app

    app = await build_app(settings)  # type: ignore[arg-type]
    front = ConsoleFrontEnd(app.conversation, out_dir, user=user)
    await front.start()
    print("Persona Studio console. /help lists the commands; /quit or Ctrl-D quits.")
    read: Callable[[str], str] = input
    pending: list[str] = []
    try:
        while True:
            try:
                line = await asyncio.to_thread(read, "you> ")
            except EOFError:
                break
            if line.strip() in ("/quit", "/exit"):
                break
            if line.strip():
                try:
                    actions = await front.send(line)
                except Exception:  # no input ends the session
                    log.exception("console: handling a line failed")
                    print("⚠️ Something went wrong on our side; the session goes on.")
                    continue
                pending += [a.job_id for a in actions if isinstance(a, Progress) and a.state == "queued"]
        unfinished = [job_id for job_id in pending if not front.finished(job_id)]
        if unfinished:  # input ended (a script piped in): let its jobs finish first
            print(f"waiting for {len(unfinished)} job(s) to finish…")
            for job_id in unfinished:
                await front.wait_job(job_id)
    finally:
        await front.stop()
        await app.close()
    return 0
