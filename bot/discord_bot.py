"""The Discord front end: the :class:`PersonaBot` client and its event handlers.

This module only translates. A slash command, a plain message in a post thread, a reaction or a
button click becomes one :class:`commands.events.Event`; the actions the commands layer returns
(or delivers later) become Discord messages. No rule of the conversation lives here.

The parts, one module each:

* ``bot.discord_translate``: Discord objects in the commands layer's terms (ids, custom ids,
  mentions, attachments downloaded at once);
* ``bot.discord_commands``: the slash commands and the result buttons;
* ``bot.discord_render``: replies, images and files as Discord messages, under the upload limit;
* ``bot.discord_progress``: one status message per job, its edits throttled.

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
* Result buttons are :class:`~bot.discord_commands.ResultButton` dynamic items whose custom id
  carries the turn id (``persona:<action>:<turn id>``), registered in ``setup_hook``: they keep
  working after a restart. Reactions on a result map to its turn through the same custom ids.
* Only a post's owner may use its buttons and reactions: a stranger's click gets an ephemeral
  refusal; a stranger's reaction is removed and they get a short reply in the thread that
  mentions them (deleted after a while) — a DM could be refused by their privacy settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Sequence
from typing import Any, Protocol

import discord
import yarl
from discord import app_commands
from discord.gateway import DiscordWebSocket
from discord.http import Route

from bot.discord_commands import ResultButton, build_commands
from bot.discord_progress import PROGRESS_INTERVAL_S, ProgressBoard, render_progress
from bot.discord_render import ActionRenderer, InteractionOutput, MessageOutput, remember, split_text
from bot.discord_translate import (
    PLATFORM,
    UserFacingError,
    channel_ids,
    custom_id,
    download_attachments,
    parse_custom_id,
    strip_mentions,
)
from bot.discord_uploads import fit_image
from commands.delivery import DeliverFn
from commands.events import EMOJI_BUTTON, Action, Button, Event, EventKind
from storage.settings import Settings, SettingsError

__all__ = [
    "REQUIRED_PERMISSIONS",
    "ConversationLike",
    "PersonaBot",
    "ProgressBoard",
    "custom_id",
    "fit_image",
    "invite_url",
    "parse_custom_id",
    "render_progress",
    "run_discord",
    "split_text",
    "strip_mentions",
]

log = logging.getLogger(__name__)

REFUSAL_DELETE_AFTER_S = 20.0
READY_TIMEOUT_S = 30.0
MISSING_PERMISSIONS_TEXT = (
    "I am missing a permission in this channel ({error}). I need View Channel, Send Messages, "
    "Create Public Threads, Send Messages in Threads, Attach Files, Add Reactions, Read Message History "
    "and Manage Messages; a server admin can grant them or re-invite me (docs/discord.md)."
)
SOMETHING_WENT_WRONG_TEXT = "Something went wrong on our side; nothing was changed. Please try again."

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
        self.renderer = ActionRenderer(
            self, conversation, settings, on_result=self._remember_turn, progress_interval=progress_interval
        )
        self._turns: OrderedDict[int, int] = OrderedDict()  # result message id -> turn id
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
            # Ask anyway: application flags are not always filled in (a test server's may be 0);
            # if Discord refuses the intent (close 4014), connect() falls back without it.
            log.warning("The application's flags do not show the Message Content intent (Developer Portal > Bot)")
        archetypes = await self.conversation.archetypes()
        for command in build_commands(self, archetypes):
            self.tree.add_command(command)
        await self.sync_commands()
        self.add_dynamic_items(ResultButton)
        self.conversation.add_deliverer(PLATFORM, self.deliver)

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
        await self.renderer.close()
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
        self.renderer.upload_limits.note(interaction)
        output = InteractionOutput(interaction, thinking=True)
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

    # -- buttons and reactions -----------------------------------------------------------------
    async def on_result_button(self, interaction: discord.Interaction[Any], action: Button, turn_id: int) -> None:
        await interaction.response.defer()  # DEFERRED_UPDATE_MESSAGE: the result message stays as is
        self.renderer.upload_limits.note(interaction)
        output = InteractionOutput(interaction, thinking=False)
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
            await self.renderer.render(actions, output, interaction=interaction)
        except Exception:
            log.exception("button %s on turn %s failed", action, turn_id)
            await output.reply(SOMETHING_WENT_WRONG_TEXT, private=True)

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
            channel = await self.renderer.channel(payload.channel_id)
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
            await self.renderer.render(actions, MessageOutput(channel, payload.user_id))
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
        remember(self._turns, message_id, turn_id)

    async def _turn_of(self, channel_id: int, message_id: int) -> int | None:
        """The turn a result message shows: remembered, or read from its buttons' custom ids."""
        if message_id in self._turns:
            return self._turns[message_id]
        message = discord.utils.get(self.cached_messages, id=message_id)
        if message is None:
            channel = await self.renderer.channel(channel_id)
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


# -- entry point -------------------------------------------------------------------------------


async def run_discord(settings: Settings, conversation: ConversationLike) -> None:
    """Run the Discord front end until cancelled (the CLI's ``run`` calls this)."""
    if settings.discord_token is None:
        raise SettingsError("setting DISCORD_TOKEN: the bot token from the Developer Portal (Bot > Token) is needed")
    token = settings.discord_token.get_secret_value()
    bot = PersonaBot(conversation, settings)  # falls back by itself if the intent is refused
    try:
        async with bot:
            await bot.start(token)
    except discord.LoginFailure:
        raise SettingsError(
            "setting DISCORD_TOKEN: Discord refused the token (reset it in the Developer Portal)"
        ) from None
