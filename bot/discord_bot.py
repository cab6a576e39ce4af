"""The Discord front end: slash commands, post threads, result buttons and reactions.

This module only translates. A slash command, a plain message in a post thread, a reaction or a
button click becomes one :class:`commands.events.Event`; the actions the commands layer returns
(or delivers later) become Discord messages. No rule of the conversation lives here.

Discord facts this code is built around (see shared/DESIGN.md and docs/discord.md):

* Every interaction is acknowledged first (``defer``), before anything that could wait: a
  command's thinking message, a button's deferred update. The commands layer never waits for a
  GPU job, but the acknowledgement does not even wait for it.
* An interaction token lives 15 minutes and jobs may take longer, so job progress and results
  are the bot's own messages in the post thread (:meth:`PersonaBot.deliver`), never followups.
* ``/post`` answers with the post message and starts the post thread from it
  (``channel.create_thread(message=...)``; the thread has the message's id).
* Plain messages in a post thread are edit instructions. They need the privileged Message Content
  intent; when the application does not have it, messages that mention the bot still carry their
  content, so the bot then listens to ``@bot <instruction>`` only.
* Result buttons are :class:`ResultButton` dynamic items whose custom id carries the turn id
  (``persona:<action>:<turn id>``), registered in ``setup_hook``: they keep working after a
  restart. Reactions on a result map to its turn through the same custom ids.
* Only a post's owner may use its buttons and reactions: a stranger's click gets an ephemeral
  refusal; a stranger's reaction is removed and they get a short reply in the thread that
  mentions them (deleted after a while) — a DM could be refused by their privacy settings.
* One status message per job, edited at most every :data:`PROGRESS_INTERVAL_S` seconds.
* Images larger than the upload limit of the interaction (``attachment_size_limit``) or guild are
  sent as JPEG/WebP under the limit; the PNG stays in the blob store.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

import discord
import yarl
from discord import app_commands
from discord.gateway import DiscordWebSocket
from discord.http import Route

from commands.events import (
    BUTTON_EMOJI,
    EMOJI_BUTTON,
    Action,
    Attachment,
    Button,
    Event,
    EventKind,
    FileOut,
    Images,
    OpenThread,
    Progress,
    Reply,
    Where,
)
from commands.texts import progress_bar
from commands.validation import MAX_IMAGE_BYTES, MAX_TEXT_CHARS
from storage.settings import Settings, SettingsError

log = logging.getLogger(__name__)

PLATFORM = "discord"
PROGRESS_INTERVAL_S = 1.5
MESSAGE_LIMIT = 2000
REFUSAL_DELETE_AFTER_S = 20.0
AUTOCOMPLETE_TIMEOUT_S = 2.5
READY_TIMEOUT_S = 30.0
MISSING_PERMISSIONS_TEXT = (
    "I am missing a permission in this channel ({error}). I need View Channel, Send Messages, "
    "Create Public Threads, Send Messages in Threads, Attach Files, Add Reactions, Read Message History "
    "and Manage Messages; a server admin can grant them or re-invite me (docs/discord.md)."
)
CUSTOM_ID_TEMPLATE = r"persona:(?P<action>approve|regen|undo|cancel):(?P<turn>[0-9]{1,19})"
_CUSTOM_ID = re.compile(CUSTOM_ID_TEMPLATE)
FINISHED_STATES = frozenset({"done", "failed", "cancelled"})
_STATE_RANK = {"queued": 0, "running": 1, "done": 2, "failed": 2, "cancelled": 2}

DeliverFn = Callable[[Sequence[Action]], Awaitable[None]]
_A = TypeVar("_A", bound=Action)

#: What the bot needs in a channel; docs/discord.md lists them with reasons.
REQUIRED_PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    create_public_threads=True,
    read_message_history=True,
    attach_files=True,
    add_reactions=True,
    manage_messages=True,  # remove strangers' reactions on results
)


def invite_url(application_id: int | str) -> str:
    """The OAuth2 URL that adds the bot to a server with the commands scope and its permissions."""
    return (
        f"https://discord.com/oauth2/authorize?client_id={application_id}"
        f"&scope=bot+applications.commands&permissions={REQUIRED_PERMISSIONS.value}"
    )


class ConversationLike(Protocol):
    """What the adapter needs of ``commands.conversation.Conversation``."""

    async def handle(self, event: Event) -> list[Action]: ...
    async def bind_thread(self, thread_db_id: int, *, channel_id: int | None, thread_id: int | None) -> None: ...
    def add_deliverer(self, platform: str, deliver: DeliverFn) -> None: ...
    async def deliver_pending(self, platform: str) -> int: ...
    async def archetypes(self) -> list[str]: ...
    async def persona_names(self, platform: str, user_id: str, prefix: str = "") -> list[str]: ...
    async def thread_owner(self, platform: str, thread_id: int) -> str | None: ...
    async def can_act(self, platform: str, user_id: str, thread_id: int) -> bool: ...
    async def abandon_thread(self, thread_db_id: int) -> None: ...


class UserFacingError(Exception):
    """Something the user can fix (an attachment that cannot be read); the text says what to do."""


# -- pure translation helpers ------------------------------------------------------------------


def channel_ids(channel: object) -> tuple[int | None, int | None]:
    """(channel_id, thread_id) of a Discord channel: a thread reports its parent and itself."""
    if isinstance(channel, discord.Thread):
        return channel.parent_id, channel.id
    channel_id = getattr(channel, "id", None)
    return (int(channel_id) if channel_id is not None else None), None


def custom_id(button: Button, turn_id: int) -> str:
    return f"persona:{button.value}:{turn_id}"


def parse_custom_id(value: str) -> tuple[Button, int] | None:
    match = _CUSTOM_ID.fullmatch(value)
    if match is None:
        return None
    return Button(match["action"]), int(match["turn"])


def split_text(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Split ``text`` into Discord-sized messages, preferring line breaks."""
    text = text.strip() or "…"
    chunks: list[str] = []
    while len(text) > limit:
        cut = text.rfind("\n", 0, limit)
        if cut <= 0:
            cut = limit
        chunks.append(text[:cut])
        text = text[cut:].lstrip("\n")
    chunks.append(text)
    return chunks


def strip_mentions(content: str, user_id: int) -> str:
    return re.sub(rf"<@!?{user_id}>", "", content).strip()


def format_eta(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "ETA …"
    seconds = round(seconds)
    if seconds < 60:
        return f"ETA {seconds} s"
    return f"ETA {seconds // 60} min {seconds % 60:02d} s"


def render_progress(progress: Progress, elapsed_s: float | None = None) -> str:
    """The text of a job's status message."""
    extra = f"\n{progress.text}" if progress.text else ""
    state = progress.state
    if state == "queued":
        if progress.position is None:
            where = "waiting for a free worker"
        elif progress.position <= 0:
            where = "you are next"
        else:
            where = f"{progress.position} job{'s' if progress.position != 1 else ''} ahead of yours"
        return f"⏳ Queued — {where}.{extra}"
    if state == "running":
        if progress.total <= 0:
            return f"🎨 Starting…{extra}"
        bar = progress_bar(progress.step, progress.total)
        return f"🎨 Working `{bar}` · {format_eta(progress.eta_s)}{extra}"
    if state == "done":
        took = f" in {elapsed_s:.0f} s" if elapsed_s is not None and elapsed_s >= 1 else ""
        return f"✅ Done{took} — the result is below.{extra}"
    if state == "failed":
        reason = progress.text or "the job stopped with an error"
        return f"❌ Failed: {reason}. Send the instruction again, or press 🔁 to retry with a new seed."
    if state == "cancelled":
        return f"🚫 Cancelled.{extra}"
    return f"{state}{extra}"


def fit_image(data: bytes, filename: str, limit: int) -> tuple[bytes, str]:
    """``data`` if it fits ``limit`` bytes, else a JPEG/WebP copy under it (scaled down if need be)."""
    if len(data) <= limit:
        return data, filename
    from PIL import Image

    stem = Path(filename).stem
    with Image.open(io.BytesIO(data)) as opened:
        opened.load()
        rgb = opened.convert("RGB")
    scale = 1.0
    while scale > 0.02:
        image = rgb
        if scale < 1.0:
            size = (max(1, int(rgb.width * scale)), max(1, int(rgb.height * scale)))
            image = rgb.resize(size, Image.Resampling.LANCZOS)
        for fmt, quality in (("JPEG", 90), ("JPEG", 80), ("WEBP", 80), ("JPEG", 65), ("WEBP", 60), ("JPEG", 50)):
            out = io.BytesIO()
            image.save(out, fmt, quality=quality)
            if out.tell() <= limit:
                ext = "jpg" if fmt == "JPEG" else "webp"
                return out.getvalue(), f"{stem}.{ext}"
        scale *= 0.7
    raise ValueError(f"{filename} cannot be made smaller than {limit} bytes")


# -- result buttons ----------------------------------------------------------------------------

_BUTTON_STYLE = {
    Button.APPROVE: discord.ButtonStyle.success,
    Button.REGEN: discord.ButtonStyle.primary,
    Button.UNDO: discord.ButtonStyle.secondary,
    Button.CANCEL: discord.ButtonStyle.danger,
}
_BUTTON_LABEL = {Button.APPROVE: "Approve", Button.REGEN: "Regenerate", Button.UNDO: "Undo", Button.CANCEL: "Cancel"}


class ResultButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=CUSTOM_ID_TEMPLATE):
    """One of ✅ 🔁 ↩️ ❌ under a result; the custom id carries the action and the turn id."""

    def __init__(self, action: Button, turn_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                style=_BUTTON_STYLE[action],
                label=_BUTTON_LABEL[action],
                emoji=BUTTON_EMOJI[action],
                custom_id=custom_id(action, turn_id),
            )
        )
        self.action = action
        self.turn_id = turn_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> ResultButton:
        return cls(Button(match["action"]), int(match["turn"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        client = interaction.client
        if isinstance(client, PersonaBot):
            await client.on_result_button(interaction, self.action, self.turn_id)


def result_view(turn_id: int, buttons: Sequence[Button]) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for action in buttons:
        view.add_item(ResultButton(action, turn_id))
    return view


# -- progress ----------------------------------------------------------------------------------


@dataclass
class _JobStatus:
    where: Where
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    channel_id: int | None = None
    message_id: int | None = None
    state: str = ""
    started: float = 0.0
    last_edit: float = 0.0
    pending: Progress | None = None
    timer: asyncio.Task[None] | None = None


class ProgressBoard:
    """One status message per job, edited at most every ``interval`` seconds.

    The latest update wins; a change of state (queued -> running -> done) is shown at once.
    Updates that arrive out of order (a late "queued" after "running") are ignored.
    """

    def __init__(
        self,
        send: Callable[[Where, str], Awaitable[discord.Message]],
        edit: Callable[[int, int, str], Awaitable[None]],
        interval: float = PROGRESS_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        self._edit = edit
        self.interval = interval
        self._clock = clock
        self._jobs: dict[str, _JobStatus] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()

    async def update(self, progress: Progress) -> None:
        if progress.job_id in self._finished:
            return
        job = self._jobs.setdefault(progress.job_id, _JobStatus(where=progress.where, started=self._clock()))
        async with job.lock:
            if job.state and _STATE_RANK.get(progress.state, 1) < _STATE_RANK.get(job.state, 1):
                return
            finished = progress.state in FINISHED_STATES
            if job.message_id is None:
                if not finished:
                    message = await self._send(progress.where, render_progress(progress))
                    job.channel_id, job.message_id = message.channel.id, message.id
                    job.state, job.last_edit = progress.state, self._clock()
            elif progress.state != job.state or finished or self._clock() - job.last_edit >= self.interval:
                await self._show(job, progress)
            else:
                job.pending = progress
                if job.timer is None:
                    delay = self.interval - (self._clock() - job.last_edit)
                    job.timer = asyncio.create_task(self._flush_later(progress.job_id, job, delay))
            if finished:
                self._forget(progress.job_id, job)

    async def _show(self, job: _JobStatus, progress: Progress) -> None:
        if job.timer is not None and job.timer is not asyncio.current_task():
            job.timer.cancel()
        job.timer = None
        job.pending = None
        elapsed = self._clock() - job.started if progress.state == "done" else None
        job.state, job.last_edit = progress.state, self._clock()
        assert job.channel_id is not None and job.message_id is not None
        try:
            await self._edit(job.channel_id, job.message_id, render_progress(progress, elapsed))
        except discord.NotFound:
            job.message_id = None  # someone deleted it: the next update posts a new one

    async def _flush_later(self, job_id: str, job: _JobStatus, delay: float) -> None:
        await asyncio.sleep(max(0.0, delay))
        async with job.lock:
            if job.timer is not asyncio.current_task():
                return
            job.timer = None
            if job.pending is not None and job.message_id is not None:
                try:
                    await self._show(job, job.pending)
                except discord.HTTPException:
                    log.warning("progress edit for job %s failed", job_id, exc_info=True)

    def _forget(self, job_id: str, job: _JobStatus) -> None:
        if job.timer is not None:
            job.timer.cancel()
        self._jobs.pop(job_id, None)
        self._finished[job_id] = None
        while len(self._finished) > 2000:
            self._finished.popitem(last=False)

    async def close(self) -> None:
        for job in self._jobs.values():
            if job.timer is not None:
                job.timer.cancel()
        self._jobs.clear()


# -- rendering outputs -------------------------------------------------------------------------


class _Output:
    """Where Reply actions of one event go; results, Progress and files go to the post thread.

    An Images action that is not a result (no turn id, e.g. ``/persona show``) answering a slash
    command is a card for the asker: an ephemeral followup with the images.
    """

    async def reply(self, text: str, private: bool) -> None:
        raise NotImplementedError

    async def finish(self) -> None:
        return None


class _InteractionOutput(_Output):
    """Replies to a slash command (after a thinking defer) or a button (after a deferred update)."""

    def __init__(self, interaction: discord.Interaction[Any], *, thinking: bool) -> None:
        self.interaction = interaction
        # After a thinking defer, the first followup would replace the thinking message (and take
        # its visibility): the original is edited for a public reply, deleted before a private one.
        self.original_pending = thinking

    async def reply(self, text: str, private: bool) -> None:
        for chunk in split_text(text):
            if self.original_pending:
                self.original_pending = False
                if not private:
                    await self.interaction.edit_original_response(content=chunk)
                    continue
                with contextlib.suppress(discord.NotFound):
                    await self.interaction.delete_original_response()
            await self.interaction.followup.send(chunk, ephemeral=private, wait=True)

    async def send_files(self, content: str | None, files: list[discord.File], private: bool) -> None:
        """Images answering the command itself (a persona card): ephemeral when ``private``."""
        if self.original_pending:
            self.original_pending = False
            if not private:
                await self.interaction.edit_original_response(content=content, attachments=files)
                return
            with contextlib.suppress(discord.NotFound):
                await self.interaction.delete_original_response()
        await self.interaction.followup.send(content or "", files=files, ephemeral=private, wait=True)

    async def post_message(self, text: str) -> discord.Message:
        """The post message: the command's own (public) response."""
        if self.original_pending:
            self.original_pending = False
            return await self.interaction.edit_original_response(content=text)
        return await self.interaction.followup.send(text, wait=True)

    async def finish(self) -> None:
        if self.original_pending:
            self.original_pending = False
            with contextlib.suppress(discord.HTTPException):
                await self.interaction.delete_original_response()


class _MessageOutput(_Output):
    """Replies to a plain message or a reaction: messages in that channel."""

    def __init__(self, channel: discord.abc.Messageable, user_id: int, reply_to: discord.Message | None = None) -> None:
        self.channel = channel
        self.user_id = user_id
        self.reply_to = reply_to

    async def reply(self, text: str, private: bool) -> None:
        mention = discord.AllowedMentions(users=[discord.Object(self.user_id)] if private else False)
        for chunk in split_text((f"<@{self.user_id}> " if private and self.reply_to is None else "") + text):
            if self.reply_to is not None:
                await self.reply_to.reply(chunk, mention_author=private, allowed_mentions=mention)
            else:
                await self.channel.send(chunk, allowed_mentions=mention)


# -- the client --------------------------------------------------------------------------------


class PersonaBot(discord.Client):
    """A discord.py client that adapts Discord to a :class:`ConversationLike`."""

    def __init__(
        self,
        conversation: ConversationLike,
        settings: Settings,
        *,
        message_content: bool = True,
        progress_interval: float = PROGRESS_INTERVAL_S,
        **options: Any,
    ) -> None:
        intents = discord.Intents.none()
        intents.guilds = True
        intents.guild_messages = True
        intents.guild_reactions = True
        intents.message_content = message_content
        options.setdefault("allowed_mentions", discord.AllowedMentions.none())
        super().__init__(intents=intents, **options)
        self.conversation = conversation
        self.settings = settings
        self.tree = app_commands.CommandTree(self)
        self.tree.error(self._on_tree_error)
        self.progress = ProgressBoard(self._send_status, self._edit_status, progress_interval)
        self._upload_limits: dict[int, int] = {}
        self._turns: OrderedDict[int, int] = OrderedDict()  # result message id -> turn id
        self._threads: OrderedDict[int, tuple[int, int]] = OrderedDict()  # thread_db_id -> (channel, thread)
        self._background: set[asyncio.Task[Any]] = set()
        self._delivered_pending = False

    @property
    def message_content_enabled(self) -> bool:
        return self._connection.intents.message_content

    # -- start ---------------------------------------------------------------------------------
    async def login(self, token: str) -> None:
        base = self.settings.discord_api_base
        if base:
            base = base.rstrip("/")
            if not re.search(r"/api/v\d+$", base):
                base += "/api/v10"
            Route.BASE = base
        await super().login(token)
        if base:
            _, url, _ = await self.http.get_bot_gateway()
            DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)

    async def setup_hook(self) -> None:
        flags = self.application_flags
        if self.message_content_enabled and not (
            flags.gateway_message_content or flags.gateway_message_content_limited
        ):
            log.warning(
                "The Message Content intent is off for this application (Developer Portal > Bot): "
                "edit instructions must mention the bot, e.g. '@%s hold the cup higher'.",
                self.user,
            )
            self._connection._intents.message_content = False
        archetypes = await self.conversation.archetypes()
        for command in build_commands(self, archetypes):
            self.tree.add_command(command)
        await self.sync_commands()
        self.add_dynamic_items(ResultButton)
        self.conversation.add_deliverer(PLATFORM, self.deliver)

    async def sync_commands(self) -> None:
        if self.settings.discord_guild_ids:
            for guild_id in self.settings.discord_guild_ids:
                guild = discord.Object(guild_id)
                self.tree.copy_global_to(guild=guild)
                try:
                    synced = await self.tree.sync(guild=guild)
                except discord.HTTPException as exc:
                    log.error("syncing commands to guild %s failed (is the bot in it?): %s", guild_id, exc)
                    continue
                log.info("synced %d commands to guild %s", len(synced), guild_id)
        else:
            synced = await self.tree.sync()
            log.info("synced %d global commands (they may take a while to appear)", len(synced))

    async def on_ready(self) -> None:
        log.info("Discord: logged in as %s (message content intent: %s)", self.user, self.message_content_enabled)
        if not self._delivered_pending:
            self._delivered_pending = True
            self._spawn(self._deliver_pending())

    async def _deliver_pending(self) -> None:
        try:
            count = await self.conversation.deliver_pending(PLATFORM)
            if count:
                log.info("delivered %d results finished while the bot was away", count)
        except Exception:
            log.exception("delivering pending results failed")

    async def close(self) -> None:
        await self.progress.close()
        for task in list(self._background):
            task.cancel()
        await super().close()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- slash commands ------------------------------------------------------------------------
    async def run_command(
        self,
        interaction: discord.Interaction[Any],
        command: str,
        options: dict[str, Any] | None = None,
        attachments: Sequence[discord.Attachment | None] = (),
    ) -> None:
        """Acknowledge, translate, hand to the conversation and render its answer."""
        await interaction.response.defer(thinking=True)
        self._note_limit(interaction)
        output = _InteractionOutput(interaction, thinking=True)
        try:
            files = await download_attachments([a for a in attachments if a is not None])
            channel_id, thread_id = channel_ids(interaction.channel)
            event = Event(
                platform=PLATFORM,
                user_id=str(interaction.user.id),
                user_name=interaction.user.display_name,
                kind=EventKind.COMMAND,
                command=command,
                options={k: v for k, v in (options or {}).items() if v is not None},
                attachments=files,
                channel_id=channel_id,
                thread_id=thread_id,
            )
            actions = await self.conversation.handle(event)
            await self.render(actions, output, interaction=interaction)
        except UserFacingError as exc:
            await output.reply(str(exc), private=True)
        except discord.Forbidden as exc:
            log.warning("/%s: missing permission: %s", command, exc)
            await output.reply(MISSING_PERMISSIONS_TEXT.format(error=exc.text or exc), private=True)
        except Exception:
            log.exception("/%s failed", command)
            await output.reply("Something went wrong on our side; nothing was changed. Please try again.", True)
        await output.finish()

    async def _on_tree_error(self, interaction: discord.Interaction[Any], error: app_commands.AppCommandError) -> None:
        log.error("command error: %s", error, exc_info=error)
        text = "That command could not run; nothing was changed."
        if isinstance(error, app_commands.TransformerError | app_commands.CheckFailure):
            text = f"That command could not run: {error}"
        with contextlib.suppress(discord.HTTPException):
            if interaction.response.is_done():
                await interaction.followup.send(text, ephemeral=True)
            else:
                await interaction.response.send_message(text, ephemeral=True)

    async def autocomplete_personas(
        self, interaction: discord.Interaction[Any], current: str
    ) -> list[app_commands.Choice[str]]:
        try:
            names = await asyncio.wait_for(
                self.conversation.persona_names(PLATFORM, str(interaction.user.id), current), AUTOCOMPLETE_TIMEOUT_S
            )
        except Exception:
            log.warning("persona autocomplete failed", exc_info=True)
            return []
        return [app_commands.Choice(name=name[:100], value=name[:100]) for name in names[:25]]

    async def autocomplete_archetypes(
        self, interaction: discord.Interaction[Any], current: str
    ) -> list[app_commands.Choice[str]]:
        try:
            names = await asyncio.wait_for(self.conversation.archetypes(), AUTOCOMPLETE_TIMEOUT_S)
        except Exception:
            log.warning("archetype autocomplete failed", exc_info=True)
            return []
        matching = [n for n in names if n.lower().startswith(current.lower())]
        return [app_commands.Choice(name=n[:100], value=n[:100]) for n in matching[:25]]

    def _note_limit(self, interaction: discord.Interaction[Any]) -> None:
        limit = getattr(interaction, "filesize_limit", None)
        if interaction.guild_id is not None and isinstance(limit, int) and limit > 0:
            self._upload_limits[interaction.guild_id] = limit

    # -- buttons and reactions -----------------------------------------------------------------
    async def on_result_button(self, interaction: discord.Interaction[Any], action: Button, turn_id: int) -> None:
        await interaction.response.defer()  # DEFERRED_UPDATE_MESSAGE: the result message stays as is
        self._note_limit(interaction)
        output = _InteractionOutput(interaction, thinking=False)
        thread = interaction.channel
        channel_id, thread_id = channel_ids(thread)
        try:
            where = thread_id or channel_id or 0
            owner = await self.conversation.thread_owner(PLATFORM, where)
            if owner is not None and not await self.conversation.can_act(PLATFORM, str(interaction.user.id), where):
                await output.reply(f"Only <@{owner}> can use the buttons of this post.", private=True)
                return
            if interaction.message is not None:
                self._remember_turn(interaction.message.id, turn_id)
            event = Event(
                platform=PLATFORM,
                user_id=str(interaction.user.id),
                user_name=interaction.user.display_name,
                kind=EventKind.REACTION,
                command=action.value,
                turn_id=turn_id,
                channel_id=channel_id,
                thread_id=thread_id,
            )
            actions = await self.conversation.handle(event)
            await self.render(actions, output, interaction=interaction)
        except Exception:
            log.exception("button %s on turn %s failed", action, turn_id)
            await output.reply("Something went wrong on our side; nothing was changed. Please try again.", True)

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        if self.user is None or payload.user_id == self.user.id or payload.guild_id is None:
            return
        action = EMOJI_BUTTON.get(str(payload.emoji))
        if action is None:
            return
        try:
            turn_id = await self._turn_of(payload.channel_id, payload.message_id)
            if turn_id is None:
                return
            channel = await self._channel(payload.channel_id)
            owner = await self.conversation.thread_owner(PLATFORM, payload.channel_id)
            if owner is not None and not await self.conversation.can_act(
                PLATFORM, str(payload.user_id), payload.channel_id
            ):
                await self._refuse_reaction(channel, payload, owner)
                return
            channel_id, thread_id = channel_ids(channel)
            member = payload.member
            event = Event(
                platform=PLATFORM,
                user_id=str(payload.user_id),
                user_name=member.display_name if member is not None else "",
                kind=EventKind.REACTION,
                command=action.value,
                turn_id=turn_id,
                channel_id=channel_id,
                thread_id=thread_id,
            )
            actions = await self.conversation.handle(event)
            await self.render(actions, _MessageOutput(channel, payload.user_id))
        except Exception:
            log.exception("reaction %s on message %s failed", payload.emoji, payload.message_id)

    async def _refuse_reaction(self, channel: Any, payload: discord.RawReactionActionEvent, owner: str) -> None:
        message = channel.get_partial_message(payload.message_id)
        try:
            await message.remove_reaction(payload.emoji, discord.Object(payload.user_id))
        except discord.HTTPException as exc:
            log.warning("could not remove a stranger's reaction (Manage Messages missing?): %s", exc)
        await channel.send(
            f"<@{payload.user_id}> only <@{owner}> can act on the results of this post.",
            allowed_mentions=discord.AllowedMentions(users=[discord.Object(payload.user_id)]),
            delete_after=REFUSAL_DELETE_AFTER_S,
        )

    def _remember_turn(self, message_id: int, turn_id: int) -> None:
        self._turns[message_id] = turn_id
        self._turns.move_to_end(message_id)
        while len(self._turns) > 10_000:
            self._turns.popitem(last=False)

    async def _turn_of(self, channel_id: int, message_id: int) -> int | None:
        """The turn a result message shows: remembered, or read from its buttons' custom ids."""
        if message_id in self._turns:
            return self._turns[message_id]
        cached = discord.utils.get(self.cached_messages, id=message_id)
        message = cached
        if message is None:
            channel = await self._channel(channel_id)
            try:
                message = await channel.fetch_message(message_id)
            except discord.HTTPException:
                return None
        if self.user is None or message.author.id != self.user.id:
            return None
        for row in message.components:
            for component in getattr(row, "children", []):
                parsed = parse_custom_id(getattr(component, "custom_id", None) or "")
                if parsed is not None:
                    self._remember_turn(message_id, parsed[1])
                    return parsed[1]
        return None

    # -- plain messages in post threads ---------------------------------------------------------
    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot or self.user is None or not isinstance(message.channel, discord.Thread):
            return
        mentioned = self.user in message.mentions
        if not self.message_content_enabled and not mentioned:
            return  # without the intent only messages that mention the bot carry content
        text = strip_mentions(message.content, self.user.id)
        if not text and not message.attachments:
            return
        try:
            if not await self.conversation.can_act(PLATFORM, str(message.author.id), message.channel.id):
                return  # not a post thread, or someone else (not an admin) talking in it
            output = _MessageOutput(message.channel, message.author.id, reply_to=message)
            try:
                files = await download_attachments(message.attachments)
            except UserFacingError as exc:
                await output.reply(str(exc), private=True)
                return
            event = Event(
                platform=PLATFORM,
                user_id=str(message.author.id),
                user_name=message.author.display_name,
                kind=EventKind.MESSAGE,
                text=text,
                attachments=files,
                channel_id=message.channel.parent_id,
                thread_id=message.channel.id,
            )
            actions = await self.conversation.handle(event)
            await self.render(actions, output)
        except Exception:
            log.exception("message %s in thread %s failed", message.id, message.channel.id)

    # -- rendering -------------------------------------------------------------------------------
    async def render(
        self,
        actions: Sequence[Action],
        output: _Output,
        *,
        interaction: discord.Interaction[Any] | None = None,
    ) -> None:
        fallback = interaction.channel if interaction is not None else getattr(output, "channel", None)
        for action in actions:
            if isinstance(action, Reply):
                await output.reply(action.text, action.private)
            elif isinstance(action, OpenThread):
                await self._open_thread(action, output if isinstance(output, _InteractionOutput) else None)
            elif isinstance(action, Progress):
                await self.progress.update(self._resolve(action, fallback))
            elif isinstance(action, Images) and not action.turn_id and isinstance(output, _InteractionOutput):
                # Not a result but a card for the asker (/persona show): only they see it.
                await self._send_card(action, output)
            elif isinstance(action, Images):
                await self._send_images(await self._target(self._resolve(action).where, fallback), action)
            elif isinstance(action, FileOut):
                await self._send_file(await self._target(self._resolve(action).where, fallback), action)
            else:
                log.warning("no Discord rendering for %r", action)

    def _resolve(self, action: _A, fallback: Any = None) -> _A:
        """Fill in the Discord thread of an action made before its thread existed (or was bound)."""
        where = action.where
        if where.thread_id is None and where.thread_db_id is not None and where.thread_db_id in self._threads:
            channel_id, thread_id = self._threads[where.thread_db_id]
            return replace(action, where=replace(where, channel_id=channel_id, thread_id=thread_id))
        if where.thread_id is None and where.channel_id is None and fallback is not None:
            channel_id, thread_id = channel_ids(fallback)
            return replace(action, where=replace(where, channel_id=channel_id, thread_id=thread_id))
        return action

    async def deliver(self, actions: Sequence[Action]) -> None:
        """The deliverer for job progress and results (the post thread, never an interaction).

        Raises when a result could not be posted, so the commands layer delivers it again later.
        """
        if self.is_closed():
            # A stopped client stays registered until the next one starts: fail at once, so the
            # delivery is released (and made by the next client) instead of holding the queue's
            # delivery lock while waiting for a READY that never comes.
            raise RuntimeError("the Discord client is closed")
        await asyncio.wait_for(self.wait_until_ready(), READY_TIMEOUT_S)
        for action in actions:
            if isinstance(action, Progress):
                try:
                    await self.progress.update(self._resolve(action))
                except discord.HTTPException:
                    log.warning("progress update for job %s failed", action.job_id, exc_info=True)
                continue
            action = self._resolve(action)
            channel = await self._target(action.where, None)
            if isinstance(action, Images):
                await self._send_images(channel, action)
            elif isinstance(action, Reply):
                text = f"<@{action.where.user_id}> {action.text}" if action.private else action.text
                users = [discord.Object(int(action.where.user_id))] if action.where.user_id.isdigit() else []
                for chunk in split_text(text):
                    await channel.send(chunk, allowed_mentions=discord.AllowedMentions(users=users))
            elif isinstance(action, FileOut):
                await self._send_file(channel, action)
            elif isinstance(action, OpenThread):
                await self._open_thread(action, None)

    async def _channel(self, channel_id: int) -> Any:
        channel = self.get_channel(channel_id)
        if channel is None:
            channel = await self.fetch_channel(channel_id)
        return channel

    async def _target(self, where: Where, fallback: Any) -> Any:
        """The channel an action goes to: its post thread, else its channel, else a DM."""
        for channel_id in (where.thread_id, where.channel_id):
            if channel_id:
                return await self._channel(channel_id)
        if fallback is not None:
            return fallback
        if where.user_id.isdigit():
            user = self.get_user(int(where.user_id)) or await self.fetch_user(int(where.user_id))
            return await user.create_dm()
        raise RuntimeError(f"no Discord channel for {where}")

    async def _send_status(self, where: Where, text: str) -> discord.Message:
        channel = await self._target(where, None)
        return await channel.send(text)

    async def _edit_status(self, channel_id: int, message_id: int, text: str) -> None:
        await self.get_partial_messageable(channel_id).get_partial_message(message_id).edit(content=text)

    async def _open_thread(self, action: OpenThread, output: _InteractionOutput | None) -> None:
        try:
            await self._create_post_thread(action, output)
        except (UserFacingError, discord.HTTPException):
            if action.where.thread_db_id is not None:  # its jobs would wait for a thread forever
                await self.conversation.abandon_thread(action.where.thread_db_id)
            raise

    async def _create_post_thread(self, action: OpenThread, output: _InteractionOutput | None) -> None:
        archive = self.settings.discord_auto_archive_minutes
        title = (action.title or "Post").strip()[:100] or "Post"
        text = action.text or title
        here = output.interaction.channel if output is not None else None
        if isinstance(here, discord.TextChannel) and output is not None:
            parent: Any = here
            post = await output.post_message(text)
        else:
            if isinstance(here, discord.Thread):
                parent = here.parent or await self._channel(here.parent_id)
            else:
                parent = await self._channel(action.where.channel_id) if action.where.channel_id else None
            if not isinstance(parent, discord.TextChannel):
                raise UserFacingError("Posts live in threads of a server text channel: use /post there.")
            post = await parent.send(text)
        # A followup/interaction message has no guild attached: start the thread from the channel.
        try:
            thread = await parent.create_thread(name=title, message=post, auto_archive_duration=archive)
        except discord.HTTPException:
            with contextlib.suppress(discord.HTTPException):
                await post.delete()  # no post message without its thread
            raise
        if action.where.thread_db_id is not None:
            self._threads[action.where.thread_db_id] = (parent.id, thread.id)
            while len(self._threads) > 10_000:
                self._threads.popitem(last=False)
            await self.conversation.bind_thread(action.where.thread_db_id, channel_id=parent.id, thread_id=thread.id)
        if output is not None and here is not parent:
            await output.reply(f"Your post is open: {thread.mention}", private=False)

    def _limit_for(self, channel: Any) -> int:
        guild = getattr(channel, "guild", None)
        if guild is not None:
            return self._upload_limits.get(guild.id, guild.filesize_limit)
        return discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES

    @staticmethod
    def _images_text(action: Images) -> str | None:
        lines = [action.text] if action.text else []
        lines += [f"{i + 1}. {image.caption}" for i, image in enumerate(action.images) if image.caption]
        return "\n".join(lines)[:MESSAGE_LIMIT] or None

    @staticmethod
    async def _fit_all(action: Images, raw: Sequence[bytes], limit: int) -> list[tuple[bytes, str]]:
        return [
            await asyncio.to_thread(fit_image, data, image.filename, limit)
            for data, image in zip(raw, action.images, strict=True)
        ]

    @staticmethod
    def _files(action: Images, fitted: Sequence[tuple[bytes, str]]) -> list[discord.File]:
        return [
            discord.File(io.BytesIO(data), filename=name, description=(image.caption or None) and image.caption[:1024])
            for (data, name), image in zip(fitted, action.images, strict=True)
        ]

    async def _send_card(self, action: Images, output: _InteractionOutput) -> None:
        raw = [await asyncio.to_thread(Path(image.path).read_bytes) for image in action.images]
        limit = getattr(output.interaction, "filesize_limit", None) or self._limit_for(output.interaction.channel)
        files = self._files(action, await self._fit_all(action, raw, limit))
        await output.send_files(self._images_text(action), files, private=True)

    async def _send_images(self, channel: Any, action: Images) -> None:
        raw = [await asyncio.to_thread(Path(image.path).read_bytes) for image in action.images]
        content = self._images_text(action)
        view = result_view(action.turn_id, action.buttons) if action.buttons and action.turn_id else None
        limit = self._limit_for(channel)
        message: discord.Message | None = None
        for _attempt in range(4):
            fitted = await self._fit_all(action, raw, limit)
            files = self._files(action, fitted)
            kwargs: dict[str, Any] = {"files": files}
            if view is not None:
                kwargs["view"] = view
            try:
                message = await channel.send(content, **kwargs)
                break
            except discord.HTTPException as exc:
                if exc.status != 413 and exc.code != 40005:
                    raise
                limit = max(64 * 1024, max(len(d) for d, _ in fitted) // 2)
                guild = getattr(channel, "guild", None)
                if guild is not None:
                    self._upload_limits[guild.id] = limit
                log.info("upload limit hit in channel %s; retrying under %d bytes", channel.id, limit)
        if message is None:
            raise RuntimeError(f"images of turn {action.turn_id} did not fit the upload limit")
        if action.turn_id:
            self._remember_turn(message.id, action.turn_id)
        # The result is posted now: a failing reaction must not make it be delivered twice.
        for button in action.buttons:
            try:
                await message.add_reaction(BUTTON_EMOJI[button])
            except discord.HTTPException as exc:
                log.warning("could not add %s to result %s: %s", BUTTON_EMOJI[button], message.id, exc)

    async def _send_file(self, channel: Any, action: FileOut) -> None:
        limit = self._limit_for(channel)
        if len(action.data) > limit:
            await channel.send(
                f"{action.filename} is {len(action.data) / 1e6:.1f} MB, over this server's upload limit "
                f"of {limit / 1e6:.0f} MB. Export fewer images, or use the console export."
            )
            return
        await channel.send(action.text or None, file=discord.File(io.BytesIO(action.data), filename=action.filename))


async def download_attachments(attachments: Sequence[discord.Attachment]) -> tuple[Attachment, ...]:
    """Read uploads now: Discord CDN links expire, so the bytes travel in the event."""
    out = []
    for attachment in attachments:
        if attachment.size > MAX_IMAGE_BYTES:
            raise UserFacingError(
                f"{attachment.filename} is {attachment.size / 1e6:.1f} MB; images may be at most "
                f"{MAX_IMAGE_BYTES // (1024 * 1024)} MB. Nothing was changed."
            )
        try:
            data = await attachment.read()
        except (discord.HTTPException, OSError) as exc:
            raise UserFacingError(
                f"Could not download {attachment.filename} from Discord ({exc.__class__.__name__}); "
                "please upload it again. Nothing was changed."
            ) from exc
        out.append(Attachment(filename=attachment.filename, data=data, content_type=attachment.content_type))
    return tuple(out)


# -- slash command definitions ---------------------------------------------------------------

_SIMPLE_COMMANDS = {
    "approve": "✅ Approve the current result of this post",
    "regen": "🔁 Regenerate the current result with a new seed",
    "undo": "↩️ Go back to the previous image of this post",
    "cancel": "❌ Cancel this post's running job",
    "history": "The turn tree of this post, with identity scores",
    "export": "Approved images of this post and a manifest, as a zip",
    "status": "Your jobs and their places in the queue",
    "help": "How Persona Studio works",
}


def build_commands(
    bot: PersonaBot, archetypes: Sequence[str]
) -> list[app_commands.Command[Any, Any, Any] | app_commands.Group]:
    """The slash commands, with archetype choices when there are 1-25 archetypes."""
    persona = app_commands.Group(name="persona", description="Create and manage personas", guild_only=True)

    async def persona_create(
        interaction: discord.Interaction[Any],
        archetype: str,
        name: app_commands.Range[str, 1, 40] | None = None,
    ) -> None:
        # no image option: a persona's face is the LoRA blend itself (its portrait is rendered)
        await bot.run_command(interaction, "persona", {"action": "create", "archetype": archetype, "name": name})

    choices = list(dict.fromkeys(archetypes))
    if 1 <= len(choices) <= 25:
        pick = app_commands.choices(archetype=[app_commands.Choice(name=a[:100], value=a[:100]) for a in choices])
    else:
        pick = app_commands.autocomplete(archetype=bot.autocomplete_archetypes)
    persona.command(name="create", description="Create a persona: a new face blended from an archetype's LoRAs")(
        app_commands.describe(
            archetype="the look to start from",
            name="a name for the persona (default: one is made up)",
        )(pick(persona_create))
    )

    @persona.command(name="list", description="Your personas")
    async def persona_list(interaction: discord.Interaction[Any]) -> None:
        await bot.run_command(interaction, "persona", {"action": "list"})

    @persona.command(name="show", description="Show a persona: its mix, seed and reference face")
    @app_commands.describe(name="the persona")
    @app_commands.autocomplete(name=bot.autocomplete_personas)
    async def persona_show(interaction: discord.Interaction[Any], name: str) -> None:
        await bot.run_command(interaction, "persona", {"action": "show", "name": name})

    @persona.command(name="delete", description="Delete one of your personas")
    @app_commands.describe(name="the persona")
    @app_commands.autocomplete(name=bot.autocomplete_personas)
    async def persona_delete(interaction: discord.Interaction[Any], name: str) -> None:
        await bot.run_command(interaction, "persona", {"action": "delete", "name": name})

    @app_commands.command(name="post", description="Open a post thread with the first images of a persona")
    @app_commands.guild_only()
    @app_commands.describe(
        persona="which persona",
        prompt="what the picture shows",
        count="how many images (1-4)",
        image="optional scene image to start from",
    )
    @app_commands.autocomplete(persona=bot.autocomplete_personas)
    async def post(
        interaction: discord.Interaction[Any],
        persona: str,
        prompt: app_commands.Range[str, 1, MAX_TEXT_CHARS],
        count: app_commands.Range[int, 1, 4] = 1,
        image: discord.Attachment | None = None,
    ) -> None:
        await bot.run_command(interaction, "post", {"persona": persona, "count": count, "prompt": prompt}, [image])

    @app_commands.command(
        name="settings", description="Generation settings: in a post for that post, elsewhere your defaults"
    )
    @app_commands.guild_only()
    @app_commands.describe(
        steps="denoising steps",
        guidance="guidance scale",
        size="image size as WxH, e.g. 1024x1024",
        seed="a number, or 'random'",
    )
    async def settings(
        interaction: discord.Interaction[Any],
        steps: app_commands.Range[int, 1, 100] | None = None,
        guidance: app_commands.Range[float, 0.0, 30.0] | None = None,
        size: app_commands.Range[str, 3, 11] | None = None,
        seed: app_commands.Range[str, 1, 20] | None = None,
    ) -> None:
        seed_value: int | str | None = int(seed) if seed is not None and seed.strip().isdigit() else seed
        await bot.run_command(
            interaction, "settings", {"steps": steps, "guidance": guidance, "size": size, "seed": seed_value}
        )

    commands: list[app_commands.Command[Any, Any, Any] | app_commands.Group] = [persona, post, settings]
    for name, description in _SIMPLE_COMMANDS.items():
        commands.append(_simple_command(bot, name, description))
    return commands


def _simple_command(bot: PersonaBot, name: str, description: str) -> app_commands.Command[Any, Any, Any]:
    async def callback(interaction: discord.Interaction[Any]) -> None:
        await bot.run_command(interaction, name)

    return app_commands.guild_only()(app_commands.Command(name=name, description=description, callback=callback))


# -- entry point -------------------------------------------------------------------------------


async def run_discord(settings: Settings, conversation: ConversationLike) -> None:
    """Run the Discord front end until cancelled (the CLI's ``run`` calls this)."""
    if settings.discord_token is None:
        raise SettingsError("setting DISCORD_TOKEN: the bot token from the Developer Portal (Bot > Token) is needed")
    token = settings.discord_token.get_secret_value()
    bot = PersonaBot(conversation, settings)
    try:
        async with bot:
            await bot.start(token)
    except discord.PrivilegedIntentsRequired:
        log.warning(
            "Discord refused the Message Content intent; running without it: edit instructions must mention the bot"
        )
        bot = PersonaBot(conversation, settings, message_content=False)
        async with bot:
            await bot.start(token)
    except discord.LoginFailure:
        raise SettingsError(
            "setting DISCORD_TOKEN: Discord refused the token (reset it in the Developer Portal)"
        ) from None
