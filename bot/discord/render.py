"""Actions rendered as Discord messages: replies, post threads, job status messages and results.

:class:`ActionRenderer` sends what the commands layer returns: replies go to the event's
:class:`Output` (the interaction, or the channel of a message or reaction); a post thread is
started from the post message; progress is one status message per job (``bot.discord.progress``);
results and files go to the post thread, under the upload limit (``bot.discord.uploads``). Text is
split into messages of at most :data:`MESSAGE_LIMIT` characters.

Every action's :class:`~commands.events.Where` names its post thread (the commands layer fills it
in from storage). The one exception is the answer to ``/post`` itself: the thread is created
while that answer is rendered, so the actions after the OpenThread in the same answer are sent
to the thread just created.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import discord

from bot.answers_first import Answering, AnswersFirst
from bot.discord.config import DiscordConfig
from bot.discord.progress import PROGRESS_INTERVAL_S, ProgressBoard
from bot.discord.slash import review_view, role_view
from bot.discord.translate import UserFacingError, channel_ids
from bot.discord.uploads import UploadLimits, add_reactions, card_files, send_file, send_images
from bot.frontend import ConversationPort, split_text
from commands.events import Action, ChooseRole, FileOut, Images, OpenThread, Progress, Reply, ReviewRequest, Where

log = logging.getLogger(__name__)

MESSAGE_LIMIT = 2000
PREVIEW_FILENAME = "preview.jpg"

_A = TypeVar("_A", bound=Action)
_Opened = dict[int, tuple[int, int]]  # post threads opened while rendering one answer: db id -> (channel, thread)


def message_chunks(text: str) -> list[str]:
    """``text`` as Discord messages of at most :data:`MESSAGE_LIMIT` characters, split at line
    breaks where that keeps them at least half full; an empty text is one "…"."""
    chunks = [chunk.strip("\n") for chunk in split_text(text.strip() or "…", MESSAGE_LIMIT)]
    return [chunk for chunk in chunks if chunk]


async def send_review_request(channel: Any, action: ReviewRequest) -> discord.Message:
    """The request in the post's thread, mentioning (and pinging only) the reviewers, with Approve /
    Request changes buttons."""
    reviewers = [r for r in action.reviewers if r.isdigit()]
    mentions = " ".join(f"<@{r}>" for r in reviewers)
    return await channel.send(
        f"{mentions} {action.text}".strip()[:2000],
        view=review_view(action.turn_id),
        allowed_mentions=discord.AllowedMentions(users=[discord.Object(int(r)) for r in reviewers]),
    )


def images_text(action: Images) -> str | None:
    lines = [action.text] if action.text else []
    lines += [f"{i + 1}. {image.caption}" for i, image in enumerate(action.images) if image.caption]
    return "\n".join(lines)[:MESSAGE_LIMIT] or None


# -- where the replies to one event go ---------------------------------------------------------


class Output:
    """Where Reply actions of one event go; results, Progress and files go to the post thread.

    An Images action that is not a result (no turn id, e.g. ``/persona show``) answering a slash
    command is a card for the asker: an ephemeral followup with the images.
    """

    async def reply(self, text: str, private: bool) -> None:
        raise NotImplementedError

    async def finish(self) -> None:
        return None


class InteractionOutput(Output):
    """Replies to a slash command (after a thinking defer) or a button (after a deferred update)."""

    def __init__(
        self, interaction: discord.Interaction[Any], *, thinking: bool, answering: Answering | None = None
    ) -> None:
        self.interaction = interaction
        # After a thinking defer, the first followup would replace the thinking message (and take
        # its visibility): the original is edited for a public reply, deleted before a private one.
        self.original_pending = thinking
        #: the command counted as before its answer (bot.answers_first) until its first message
        self.answering = answering

    def answered(self) -> None:
        if self.answering is not None:
            self.answering.answered()

    async def _edit_original(self, private: bool) -> bool:
        """Whether this answer should edit the thinking message (deleted first for a private one)."""
        self.answered()  # what is sent now is the answer: the follow-up work may go on
        if not self.original_pending:
            return False
        self.original_pending = False
        if not private:
            return True
        with contextlib.suppress(discord.NotFound):
            await self.interaction.delete_original_response()
        return False

    async def reply(self, text: str, private: bool) -> None:
        for chunk in message_chunks(text):
            if await self._edit_original(private):
                await self.interaction.edit_original_response(content=chunk)
                continue
            await self.interaction.followup.send(chunk, ephemeral=private, wait=True)

    async def send_files(self, content: str | None, files: list[discord.File], private: bool) -> None:
        """Images answering the command itself (a persona card): ephemeral when ``private``."""
        if await self._edit_original(private):
            await self.interaction.edit_original_response(content=content, attachments=files)
            return
        await self.interaction.followup.send(content or "", files=files, ephemeral=private, wait=True)

    async def post_message(self, text: str) -> discord.Message:
        """The post message: the command's own (public) response."""
        if await self._edit_original(private=False):
            return await self.interaction.edit_original_response(content=text)
        return await self.interaction.followup.send(text, wait=True)

    async def finish(self) -> None:
        self.answered()
        if self.original_pending:
            self.original_pending = False
            with contextlib.suppress(discord.HTTPException):
                await self.interaction.delete_original_response()


class MessageOutput(Output):
    """Replies to a plain message or a reaction: messages in that channel."""

    def __init__(self, channel: discord.abc.Messageable, user_id: int, reply_to: discord.Message | None = None) -> None:
        self.channel = channel
        self.user_id = user_id
        self.reply_to = reply_to

    async def reply(self, text: str, private: bool) -> None:
        mention = discord.AllowedMentions(users=[discord.Object(self.user_id)] if private else False)
        for chunk in message_chunks((f"<@{self.user_id}> " if private and self.reply_to is None else "") + text):
            if self.reply_to is not None:
                await self.reply_to.reply(chunk, mention_author=private, allowed_mentions=mention)
            else:
                await self.channel.send(chunk, allowed_mentions=mention)


# -- actions to messages -----------------------------------------------------------------------


class ActionRenderer:
    """Sends actions to Discord for ``client``; ``on_result(message id, turn id)`` hears of each result."""

    def __init__(
        self,
        client: discord.Client,
        conversation: ConversationPort,
        config: DiscordConfig,
        *,
        on_result: Callable[[int, int], None],
        progress_interval: float = PROGRESS_INTERVAL_S,
        answers: AnswersFirst | None = None,
    ) -> None:
        self.client = client
        #: a post's thread is opened once the commands of a burst have their answers
        self.answers = answers or AnswersFirst()
        self.conversation = conversation
        self.config = config
        self.on_result = on_result
        self.progress = ProgressBoard(self._send_status, self._edit_status, progress_interval)
        self.upload_limits = UploadLimits()

    async def close(self) -> None:
        await self.progress.close()

    async def render(
        self,
        actions: Sequence[Action],
        output: Output,
        *,
        interaction: discord.Interaction[Any] | None = None,
    ) -> None:
        """The answer to one event: replies to ``output``, the rest to the post thread."""
        fallback = interaction.channel if interaction is not None else getattr(output, "channel", None)
        opened: _Opened = {}
        for action in actions:
            if isinstance(action, Reply):
                await output.reply(action.text, action.private)
            elif isinstance(action, OpenThread):
                await self._open_thread(action, output if isinstance(output, InteractionOutput) else None, opened)
            elif isinstance(action, Progress):
                await self.progress.update(_resolve(action, opened, fallback))
            elif isinstance(action, Images) and not action.turn_id and isinstance(output, InteractionOutput):
                # Not a result but a card for the asker (/persona show): only they see it.
                files = await card_files(action, self.upload_limits.for_interaction(output.interaction))
                await output.send_files(images_text(action), files, private=True)
            elif isinstance(action, Images):
                await self._send_images(await self._target(_resolve(action, opened).where, fallback), action)
            elif isinstance(action, FileOut):
                channel = await self._target(_resolve(action, opened).where, fallback)
                await send_file(channel, action, self.upload_limits)
            elif isinstance(action, ChooseRole):  # buttons in the channel the images came from
                channel = await self._target(_resolve(action, opened).where, fallback)
                await channel.send(f"<@{action.where.user_id}> {action.text}", view=role_view(action.key))
            elif isinstance(action, ReviewRequest):  # in the post's thread, mentioning the reviewers
                channel = await self._target(_resolve(action, opened).where, fallback)
                await send_review_request(channel, action)
            else:
                log.warning("no Discord rendering for %r", action)

    async def deliver(self, actions: Sequence[Action]) -> None:
        """Job progress and results, in the post thread; raises when a result could not be posted."""
        opened: _Opened = {}
        for action in actions:
            if isinstance(action, Progress):
                try:
                    await self.progress.update(_resolve(action, opened))
                except discord.HTTPException:
                    log.warning("progress update for job %s failed", action.job_id, exc_info=True)
                continue
            action = _resolve(action, opened)
            channel = await self._target(action.where, None)
            if isinstance(action, Images):
                await self._send_images(channel, action)
            elif isinstance(action, Reply):
                text = f"<@{action.where.user_id}> {action.text}" if action.private else action.text
                users = [discord.Object(int(action.where.user_id))] if action.where.user_id.isdigit() else []
                for chunk in message_chunks(text):
                    await channel.send(chunk, allowed_mentions=discord.AllowedMentions(users=users))
            elif isinstance(action, FileOut):
                await send_file(channel, action, self.upload_limits)
            elif isinstance(action, OpenThread):
                await self._open_thread(action, None, opened)

    async def channel(self, channel_id: int) -> Any:
        channel = self.client.get_channel(channel_id)
        if channel is None:
            channel = await self.client.fetch_channel(channel_id)
        return channel

    async def _target(self, where: Where, fallback: Any) -> Any:
        """The channel an action goes to: its post thread, else its channel, else a DM."""
        for channel_id in (where.thread_id, where.channel_id):
            if channel_id:
                return await self.channel(channel_id)
        if fallback is not None:
            return fallback
        if where.user_id.isdigit():
            user = self.client.get_user(int(where.user_id)) or await self.client.fetch_user(int(where.user_id))
            return await user.create_dm()
        raise RuntimeError(f"no Discord channel for {where}")

    async def _send_status(self, where: Where, text: str) -> discord.Message:
        channel = await self._target(where, None)
        return await channel.send(text)

    async def _edit_status(
        self, channel_id: int, message_id: int, text: str, *, image: bytes | None = None, clear: bool = False
    ) -> None:
        """Edit a status message (the bot's own: no interaction token involved); ``image`` replaces
        its attachment with a live preview, ``clear`` removes it."""
        message = self.client.get_partial_messageable(channel_id).get_partial_message(message_id)
        if image is not None:
            await message.edit(content=text, attachments=[discord.File(io.BytesIO(image), filename=PREVIEW_FILENAME)])
        elif clear:
            await message.edit(content=text, attachments=[])
        else:
            await message.edit(content=text)

    async def _send_images(self, channel: Any, action: Images) -> None:
        message = await send_images(channel, action, images_text(action), self.upload_limits)
        if action.turn_id:
            self.on_result(message.id, action.turn_id)
        # The result is posted now: a failing reaction must not make it be delivered twice.
        await add_reactions(message, action.buttons)

    async def _open_thread(self, action: OpenThread, output: InteractionOutput | None, opened: _Opened) -> None:
        try:
            ids = await self._create_post_thread(action, output)
        except (UserFacingError, discord.HTTPException):
            if action.where.thread_db_id is not None:  # its jobs would wait for a thread forever
                await self.conversation.abandon_thread(action.where.thread_db_id)
            raise
        if action.where.thread_db_id is not None:
            opened[action.where.thread_db_id] = ids

    async def _create_post_thread(self, action: OpenThread, output: InteractionOutput | None) -> tuple[int, int]:
        """Post the post message, start the thread from it, bind it; (channel id, thread id)."""
        archive = self.config.auto_archive_minutes
        title = (action.title or "Post").strip()[:100] or "Post"
        text = action.text or title
        here = output.interaction.channel if output is not None else None
        if isinstance(here, discord.TextChannel) and output is not None:
            parent: Any = here
            post = await output.post_message(text)
            await self.answers.after_answers()  # the thread, its binding and jobs: after the burst's answers
        else:
            if isinstance(here, discord.Thread):
                parent = here.parent or await self.channel(here.parent_id)
            else:
                parent = await self.channel(action.where.channel_id) if action.where.channel_id else None
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
            await self.conversation.bind_thread(action.where.thread_db_id, channel_id=parent.id, thread_id=thread.id)
        if output is not None and here is not parent:
            await output.reply(f"Your post is open: {thread.mention}", private=False)
        return parent.id, thread.id


def _resolve(action: _A, opened: _Opened, fallback: Any = None) -> _A:
    """Fill in the Discord thread of an action answering the ``/post`` that opened it (``opened``
    in the same answer), or the channel the event came from (``fallback``)."""
    where = action.where
    if where.thread_id is None and where.thread_db_id is not None and where.thread_db_id in opened:
        channel_id, thread_id = opened[where.thread_db_id]
        return replace(action, where=replace(where, channel_id=channel_id, thread_id=thread_id))
    if where.thread_id is None and where.channel_id is None and fallback is not None:
        channel_id, thread_id = channel_ids(fallback)
        return replace(action, where=replace(where, channel_id=channel_id, thread_id=thread_id))
    return action
