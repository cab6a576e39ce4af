"""The Discord client: :class:`PersonaBot`, its start, its slash commands and plain messages.

This package only translates. A slash command, a plain message in a post thread, a reaction or a
button click becomes one :class:`commands.events.Event`; the actions the commands layer returns
(or delivers later) become Discord messages. No rule of the conversation lives here.

The parts, one module each:

* ``bot.discord.translate``: Discord objects in the commands layer's terms (ids, custom ids,
  mentions, attachments downloaded at once);
* ``bot.discord.slash``: the slash commands and the result buttons;
* ``bot.discord.clicks``: button clicks (results, review, reference roles), stored before their
  acknowledgement like commands;
* ``bot.discord.reactions``: reactions on results, owner-only;
* ``bot.discord.render``: replies, images and files as Discord messages, under the upload limit;
* ``bot.discord.progress``: one status message per job, its edits throttled;
* ``bot.discord.front_end``: the client as a :class:`bot.frontend.FrontEnd` (``persona-studio run``).

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
* Result buttons are :class:`~bot.discord.slash.ResultButton` dynamic items whose custom id
  carries the turn id (``persona:<action>:<turn id>``), registered in ``setup_hook``: they keep
  working after a restart. Reactions on a result map to its turn through the same custom ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Sequence
from typing import Any

import discord
import yarl
from discord import app_commands
from discord.gateway import DiscordWebSocket
from discord.http import Route

from bot.answers_first import AnswersFirst
from bot.discord.clicks import ButtonClicks
from bot.discord.config import DiscordConfig
from bot.discord.pending import (
    InteractionStore,
    ResumedInteraction,
    attachments_of,
    describe,
    inbox_platform,
    pending_commands,
    stored_command,
)
from bot.discord.permissions import MISSING_PERMISSIONS_TEXT, SOMETHING_WENT_WRONG_TEXT
from bot.discord.progress import PROGRESS_INTERVAL_S
from bot.discord.reactions import ResultReactions
from bot.discord.render import ActionRenderer, InteractionOutput, MessageOutput
from bot.discord.slash import ResultButton, ReviewButton, RoleButton, build_commands
from bot.discord.translate import (
    PLATFORM,
    UserFacingError,
    download_attachments,
    interaction_event,
    member_workspace,
    strip_mentions,
)
from bot.frontend import ConversationClient, ConversationPort, FrontEndTasks
from commands.events import Action, Event, EventKind
from storage.inbox import Inbox

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 30.0


# -- the client --------------------------------------------------------------------------------


class PersonaBot(ButtonClicks, ResultReactions, ConversationClient, discord.Client):
    """A discord.py client that adapts Discord to the conversation (:class:`bot.frontend.ConversationPort`)."""

    platform = PLATFORM

    def __init__(
        self,
        conversation: ConversationPort,
        config: DiscordConfig,
        *,
        message_content: bool = True,
        progress_interval: float = PROGRESS_INTERVAL_S,
        inbox: Inbox | None = None,
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
        self.config = config
        self.tree = app_commands.CommandTree(self)
        self.tree.error(self._on_tree_error)
        #: commands before their answer go first; what follows an answer waits for them
        self.answers = AnswersFirst()
        self.renderer = ActionRenderer(
            self,
            conversation,
            config,
            on_result=self._remember_turn,
            progress_interval=progress_interval,
            answers=self.answers,
        )
        self._init_reactions()
        self.tasks = FrontEndTasks("discord")
        self._delivered_pending = False
        #: slash commands and button clicks are stored here before they are deferred (bot.discord.pending)
        self.inbox = inbox
        self.interactions = InteractionStore(inbox)

    @property
    def message_content_enabled(self) -> bool:
        return self._connection.intents.message_content

    # -- start ---------------------------------------------------------------------------------
    async def login(self, token: str) -> None:
        base = self.config.api_base
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
            # Ask anyway: application flags are not always filled in (a test server's may be 0);
            # if Discord refuses the intent (close 4014), connect() falls back without it.
            log.warning("The application's flags do not show the Message Content intent (Developer Portal > Bot)")
        await self.tasks.open()
        archetypes = await self.conversation.archetypes()
        for command in build_commands(self, archetypes):
            self.tree.add_command(command)
        await self.sync_commands()
        self.add_dynamic_items(ResultButton, RoleButton, ReviewButton)
        self.register_deliverer()

    async def connect(self, *, reconnect: bool = True) -> None:
        """Connect; if Discord refuses the Message Content intent (close 4014), connect again
        without it: edit instructions must then mention the bot."""
        try:
            await super().connect(reconnect=reconnect)
        except discord.PrivilegedIntentsRequired:
            if not self.message_content_enabled:
                raise
            log.warning(
                "Discord refused the Message Content intent; running without it: "
                "edit instructions must mention the bot, e.g. '@%s hold the cup higher'.",
                self.user,
            )
            self._connection._intents.message_content = False
            await super().connect(reconnect=reconnect)

    async def sync_commands(self) -> None:
        if self.config.guild_ids:
            for guild_id in self.config.guild_ids:
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
            self.tasks.spawn(self.deliver_pending(), name="discord-deliver-pending")
            if self.inbox is not None:
                self.tasks.spawn(self.answer_pending_commands(), name="discord-pending-commands")

    async def close(self) -> None:
        await self.renderer.close()
        await self.tasks.close(timeout_s=0)  # background work is cancelled, as the connection ends
        await super().close()

    # -- slash commands ------------------------------------------------------------------------
    async def run_command(
        self,
        interaction: discord.Interaction[Any],
        command: str,
        options: dict[str, Any] | None = None,
        attachments: Sequence[discord.Attachment | None] = (),
        roles: Sequence[str | None] = (),
    ) -> None:
        """Store, acknowledge, translate, hand to the conversation and render its answer."""
        given = [(a, roles[i] if i < len(roles) else None) for i, a in enumerate(attachments) if a is not None]
        files, kinds = [a for a, _ in given], [role for _, role in given]
        answering = self.answers.answering()
        payload = stored_command(interaction, command, options or {}, files, kinds)
        async with self.interactions.kept(interaction, payload):
            try:
                await interaction.response.defer(thinking=True)
                self.renderer.upload_limits.note(interaction)
                output = InteractionOutput(interaction, thinking=True, answering=answering)
                await self._answer_command(output, interaction, command, options or {}, files, kinds)
            finally:
                answering.answered()

    async def _answer_command(
        self,
        output: InteractionOutput,
        interaction: Any,
        command: str,
        options: dict[str, Any],
        attachments: list[discord.Attachment],
        roles: list[str | None],
    ) -> None:
        try:
            files = await download_attachments(attachments, roles)
            given = {k: v for k, v in options.items() if v is not None}
            event = interaction_event(interaction, EventKind.COMMAND, command, options=given, attachments=files)
            actions = await self.conversation.handle(event)
            await self.renderer.render(actions, output, interaction=interaction)
        except UserFacingError as exc:
            await output.reply(str(exc), private=True)
        except discord.Forbidden as exc:
            log.warning("/%s: missing permission: %s", command, exc)
            await output.reply(MISSING_PERMISSIONS_TEXT.format(error=exc.text or exc), private=True)
        except Exception:
            log.exception("/%s failed", command)
            await output.reply(SOMETHING_WENT_WRONG_TEXT, private=True)
        await output.finish()

    async def answer_pending_commands(self) -> int:
        """Answer the commands a killed process stored but did not answer, while their token is
        valid (the "thinking…" message is edited with the answer); how many."""
        assert self.inbox is not None
        valid, _ = await pending_commands(self.inbox, inbox_platform(self.application_id))
        valid = [row for row in valid if row.key not in self.interactions.answering]  # arrived since the start
        for row in valid:
            payload = row.payload
            try:
                channel = self.get_channel(payload["channel_id"]) or await self.fetch_channel(payload["channel_id"])
                resumed = ResumedInteraction(self, payload, channel)
                log.info("discord: answering %s stored before a restart", describe(payload))
                if "click" in payload:
                    await self.handle_click(resumed, payload["click"], payload.get("args") or {})
                else:
                    await self._answer_command(
                        InteractionOutput(resumed, thinking=True),  # type: ignore[arg-type]
                        resumed,
                        payload["command"],
                        payload["options"],
                        attachments_of(self, payload),
                        payload["roles"],
                    )
            except Exception:
                log.exception("discord: a stored %s could not be answered", describe(payload))
            await self.inbox.done(row.id)
        return len(valid)

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
            where = member_workspace(message.guild, message.author, message.author.id)
            if not where.get("workspace_admin") and not await self.conversation.can_act(
                PLATFORM, str(message.author.id), message.channel.id
            ):
                return  # not a post thread, or someone else (not an admin) talking in it
            output = MessageOutput(message.channel, message.author.id, reply_to=message)
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
                **where,
            )
            actions = await self.conversation.handle(event)
            await self.renderer.render(actions, output)
        except Exception:
            log.exception("message %s in thread %s failed", message.id, message.channel.id)

    # -- job progress and results -------------------------------------------------------------
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
        await self.renderer.deliver(actions)
