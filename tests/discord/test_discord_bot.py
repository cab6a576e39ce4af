"""PersonaBot driven end to end through the fake Discord, with a stand-in conversation.

The stand-in (tests/discord/standin.py) records the Events the adapter produces and returns
scripted Actions; these tests check the translation both ways against Discord's wire formats.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from bot.discord import PersonaBot
from commands.events import Button, Event, EventKind, Images, OpenThread, Progress, Reply, Where
from tests.discord.conftest import StartBot
from tests.discord.helpers import image_out, png_bytes
from tests.discord.standin import StandInConversation
from tests.fakes.discord_server import (
    CALLBACK_AUTOCOMPLETE_RESULT,
    CALLBACK_DEFERRED_CHANNEL_MESSAGE,
    CALLBACK_DEFERRED_UPDATE_MESSAGE,
    MESSAGE_FLAG_EPHEMERAL,
    FakeDiscord,
    RecordedRequest,
)

ALL_BUTTONS = (Button.APPROVE, Button.REGEN, Button.UNDO, Button.CANCEL)


def where_for(fake: FakeDiscord, **ids: int | None) -> Where:
    return Where(platform="discord", user_id=fake.owner["id"], **ids)  # type: ignore[arg-type]


async def open_post(
    fake: FakeDiscord, conversation: StandInConversation, *, thread_db_id: int = 7
) -> tuple[int, RecordedRequest]:
    """Run /post through the bot; returns the new thread's id and the callback request."""

    def script(event: Event) -> list:
        if event.command == "post":
            where = where_for(fake, thread_db_id=thread_db_id, channel_id=event.channel_id)
            return [
                OpenThread(where=where, title="mia · latte", text="**mia** — a latte on a terrace"),
                Progress(where=where, job_id="job-1", state="queued", position=2),
            ]
        return []

    conversation.script = script
    scene = fake.add_cdn_file("scene.png", png_bytes(48, 32), "image/png")
    mark = fake.mark()
    interaction = await fake.send_interaction(
        fake.slash_command("post", {"persona": "mia", "prompt": "a latte on a terrace", "count": 2, "scene": scene})
    )
    callback = await fake.wait_callback(interaction)
    await conversation.wait_binds(len(conversation.binds) + 1)
    thread = await fake.wait_request(route="create_thread_from_message", since=mark)
    await fake.wait_request(
        lambda r: r.vars["channel_id"] == thread.response["id"] and "Queued" in r.json["content"],
        route="create_message",
        since=mark,
    )
    return int(thread.response["id"]), callback


async def test_commands_are_synced_to_the_configured_guild(fake: FakeDiscord, start_bot: StartBot) -> None:
    await start_bot(StandInConversation(archetypes=["sweet", "boss"]))
    sync = await fake.wait_request(route="sync_guild_commands")
    assert sync.vars["guild_id"] == str(fake.guild_id) and not fake.requests_for("sync_global_commands")
    names = {c["name"] for c in sync.json}
    assert names == {
        "persona",
        "post",
        "product",
        "settings",
        "approve",
        "regen",
        "undo",
        "cancel",
        "video",
        "history",
        "export",
        "status",
        "gallery",
        "help",
        "edit",
        "tryon",
        "team",
        "reject",
    }
    edit = next(c for c in sync.json if c["name"] == "edit")  # region edits: words or a mask image
    assert {o["name"]: o["type"] for o in edit["options"]} == {
        "instruction": 3, "region": 3, "image": 3, "product": 3, "mask": 11, "product_image": 11,
    }  # fmt: skip
    create = next(o for o in next(c for c in sync.json if c["name"] == "persona")["options"] if o["name"] == "create")
    archetype = next(o for o in create["options"] if o["name"] == "archetype")
    assert [c["value"] for c in archetype["choices"]] == ["sweet", "boss"]
    post = next(c for c in sync.json if c["name"] == "post")
    types = {o["name"]: o["type"] for o in post["options"]}
    assert types == {"persona": 3, "prompt": 3, "count": 4, "product": 3, "product_image": 11, "scene": 11, "image": 11}
    assert next(o for o in post["options"] if o["name"] == "persona")["autocomplete"] is True
    assert next(o for o in post["options"] if o["name"] == "product")["autocomplete"] is True
    product = next(c for c in sync.json if c["name"] == "product")
    add = next(o for o in product["options"] if o["name"] == "add")
    assert {o["name"]: o["type"] for o in add["options"]} == {"name": 3, "image": 11}


async def test_commands_sync_globally_without_guild_ids(fake: FakeDiscord, start_bot: StartBot) -> None:
    await start_bot(StandInConversation(), guild_sync=False)
    sync = await fake.wait_request(route="sync_global_commands")
    assert len(sync.json) == 18 and not fake.requests_for("sync_guild_commands")


async def test_a_whole_post_conversation(fake: FakeDiscord, start_bot: StartBot, tmp_path: Path) -> None:
    conversation = StandInConversation()
    await start_bot(conversation)
    thread_id, callback = await open_post(fake, conversation)

    # The slash command: acknowledged with a thinking defer, translated into one COMMAND event.
    assert callback.json == {"type": CALLBACK_DEFERRED_CHANNEL_MESSAGE}
    event = conversation.events[0]
    assert (event.kind, event.command, event.platform) == (EventKind.COMMAND, "post", "discord")
    assert event.options == {"persona": "mia", "prompt": "a latte on a terrace", "count": 2}
    assert (event.user_id, event.channel_id, event.thread_id) == (fake.owner["id"], fake.channel_id, None)
    assert event.attachments[0].filename == "scene.png" and event.attachments[0].data == png_bytes(48, 32)
    assert event.attachments[0].content_type == "image/png"

    # OpenThread: the post message is the command's response; the thread starts from it.
    thread = fake.channels[thread_id]
    post_message = fake.messages[thread_id]
    assert post_message["content"] == "**mia** — a latte on a terrace" and not post_message["flags"]
    assert thread["parent_id"] == str(fake.channel_id) and thread["name"] == "mia · latte"
    assert thread["thread_metadata"]["auto_archive_duration"] == 60
    assert conversation.binds == [(7, fake.channel_id, thread_id)]
    status = fake.channel_messages(thread_id)[0]
    assert "2 jobs ahead" in status["content"]

    # Job progress and the result arrive through the deliverer, into the thread.
    conversation.owners[thread_id] = fake.owner["id"]
    deliver = conversation.deliverers["discord"]
    where = where_for(fake, thread_db_id=7, channel_id=fake.channel_id, thread_id=thread_id)
    fake.expire_interaction_tokens()  # 15 minutes later: nothing may need the interaction any more
    mark = fake.mark()
    await deliver([Progress(where=where, job_id="job-1", state="running", step=3, total=10, eta_s=20)])
    edit = await fake.wait_request(route="edit_message", since=mark)
    assert edit.vars["message_id"] == status["id"] and "3/10" in edit.json["content"]
    images = (
        image_out(tmp_path, "post7-turn11-1.png", png_bytes(40, 40), "image 1 · identity 0.81"),
        image_out(tmp_path, "post7-turn11-2.png", png_bytes(40, 40, noise=True), "image 2 · identity 0.77"),
    )
    await deliver(
        [
            Progress(where=where, job_id="job-1", state="done"),
            Images(where=where, turn_id=11, job_id="job-1", text="Generate #11", images=images, buttons=ALL_BUTTONS),
        ]
    )
    result_request = await fake.wait_request(lambda r: bool(r.files), route="create_message", since=mark)
    assert result_request.vars["channel_id"] == str(thread_id)
    assert [f.filename for f in result_request.files] == ["post7-turn11-1.png", "post7-turn11-2.png"]
    assert result_request.files[0].data == png_bytes(40, 40)
    custom_ids = [c["custom_id"] for row in result_request.json["components"] for c in row["components"]]
    assert custom_ids == ["persona:approve:11", "persona:regen:11", "persona:undo:11", "persona:cancel:11"]
    assert "Generate #11" in result_request.json["content"] and "identity 0.81" in result_request.json["content"]
    result_id = int(result_request.response["id"])
    await fake.wait_until(lambda: len(fake.reactions.get(result_id, {})) == 4)
    assert list(fake.reactions[result_id]) == ["✅", "🔁", "↩️", "❌"]
    assert fake.messages[int(status["id"])]["content"].startswith("✅ Done")
    assert not [r for r in fake.requests[mark:] if r.route.startswith("webhook") or r.route == "followup"]

    # A plain message of the owner in the thread is an edit instruction.
    conversation.script = lambda e: [Reply(where=where, text="On it: hold the latte higher")]
    mark = fake.mark()
    await fake.user_message(thread_id, "hold the latte higher")
    events = await conversation.wait_events(2)
    assert (events[1].kind, events[1].text, events[1].thread_id) == (
        EventKind.MESSAGE,
        "hold the latte higher",
        thread_id,
    )
    assert events[1].channel_id == fake.channel_id
    reply = await fake.wait_request(route="create_message", since=mark)
    assert reply.json["content"] == "On it: hold the latte higher"
    assert reply.json["message_reference"]["message_id"] is not None

    # The owner's reaction and button act on the turn the result shows.
    conversation.script = lambda e: []
    await fake.user_react(thread_id, result_id, "✅")
    events = await conversation.wait_events(3)
    assert (events[2].kind, events[2].command, events[2].turn_id) == (EventKind.REACTION, "approve", 11)
    assert events[2].thread_id == thread_id
    click = await fake.send_interaction(fake.component_click(result_id, "persona:regen:11"))
    assert (await fake.wait_callback(click)).json == {"type": CALLBACK_DEFERRED_UPDATE_MESSAGE}
    events = await conversation.wait_events(4)
    assert (events[3].kind, events[3].command, events[3].turn_id) == (EventKind.REACTION, "regen", 11)
    # The bot's own four reactions never became events.
    assert len(conversation.events) == 4


async def test_acknowledges_within_3_seconds_while_the_backend_is_busy(fake: FakeDiscord, start_bot: StartBot) -> None:
    conversation = StandInConversation(lambda e: [Reply(where=where_for(fake), text=f"{e.command} done")])
    conversation.gate = asyncio.Event()  # handle() blocks until the test opens the gate
    await start_bot(conversation)
    interactions = [await fake.send_interaction(fake.slash_command(name)) for name in ("status", "help", "history")]
    for interaction in interactions:
        callback = await fake.wait_callback(interaction)
        assert callback.status == 200 and callback.json["type"] == CALLBACK_DEFERRED_CHANNEL_MESSAGE
        assert interaction.ack_delay is not None and interaction.ack_delay < 3.0
    await conversation.wait_events(3)
    assert not fake.requests_for("webhook_edit")  # nothing answered yet: all three still blocked
    conversation.gate.set()
    await fake.wait_until(lambda: len(fake.requests_for("webhook_edit")) == 3)
    contents = sorted(fake.messages[i.original_message_id or 0]["content"] for i in interactions)
    assert contents == ["help done", "history done", "status done"]
    assert not any(i.late_callback for i in interactions)


async def test_private_reply_is_ephemeral_and_replaces_the_thinking_message(
    fake: FakeDiscord, start_bot: StartBot
) -> None:
    conversation = StandInConversation(
        lambda e: [Reply(where=where_for(fake), text="No persona named zed.", private=True)]
    )
    await start_bot(conversation)
    interaction = await fake.send_interaction(fake.slash_command("persona", {"name": "zed"}, subcommand="show"))
    followup = await fake.wait_request(route="followup")
    assert followup.json["flags"] & MESSAGE_FLAG_EPHEMERAL and followup.json["content"] == "No persona named zed."
    assert followup.response["flags"] & MESSAGE_FLAG_EPHEMERAL
    # The public "thinking" message was deleted first, so nobody else sees anything.
    assert fake.requests_for("webhook_delete") and interaction.original_message_id not in fake.messages
    assert not [m for m in fake.channel_messages(fake.channel_id) if m["content"]]
    assert conversation.events[0].options == {"action": "show", "name": "zed"}


async def test_persona_and_settings_options(fake: FakeDiscord, start_bot: StartBot) -> None:
    conversation = StandInConversation()
    await start_bot(conversation)
    await fake.send_interaction(
        fake.slash_command("persona", {"archetype": "boss", "name": "nora"}, subcommand="create")
    )
    await fake.send_interaction(
        fake.slash_command("settings", {"steps": 12, "guidance": 3.5, "size": "768x512", "seed": "42"})
    )
    await fake.send_interaction(fake.slash_command("settings", {"seed": "random"}))
    events = await conversation.wait_events(3)
    by_command = sorted(events, key=lambda e: (e.command or "", len(e.options)), reverse=True)
    assert by_command[0].options == {"steps": 12, "guidance": 3.5, "size": "768x512", "seed": 42}
    assert by_command[1].options == {"seed": "random"}
    assert by_command[2].options == {"action": "create", "archetype": "boss", "name": "nora"}
    # An answer with no Reply leaves no stray "thinking" message behind.
    await fake.wait_until(lambda: len(fake.requests_for("webhook_delete")) == 3)


async def test_persona_autocomplete(fake: FakeDiscord, start_bot: StartBot) -> None:
    conversation = StandInConversation()
    conversation.personas[fake.owner["id"]] = ["mia", "milo", "nora"]
    await start_bot(conversation)
    interaction = await fake.send_interaction(
        fake.slash_command("post", {"persona": "mi", "prompt": "x"}, focused="persona")
    )
    callback = await fake.wait_callback(interaction)
    assert callback.json["type"] == CALLBACK_AUTOCOMPLETE_RESULT
    assert [c["value"] for c in callback.json["data"]["choices"]] == ["mia", "milo"]
    assert conversation.events == []


async def test_strangers_buttons_and_reactions_are_refused(
    fake: FakeDiscord, start_bot: StartBot, tmp_path: Path
) -> None:
    conversation = StandInConversation()
    await start_bot(conversation)
    thread_id, _ = await open_post(fake, conversation)
    conversation.owners[thread_id] = fake.owner["id"]
    where = where_for(fake, thread_db_id=7, channel_id=fake.channel_id, thread_id=thread_id)
    mark = fake.mark()
    images = (image_out(tmp_path, "r.png", png_bytes()),)
    await conversation.deliverers["discord"]([Images(where=where, turn_id=5, images=images, buttons=ALL_BUTTONS)])
    result = await fake.wait_request(lambda r: bool(r.files), route="create_message", since=mark)
    result_id = int(result.response["id"])
    await fake.wait_until(lambda: len(fake.reactions.get(result_id, {})) == 4)
    before = len(conversation.events)

    click = await fake.send_interaction(fake.component_click(result_id, "persona:undo:5", user=fake.stranger))
    assert (await fake.wait_callback(click)).json["type"] == CALLBACK_DEFERRED_UPDATE_MESSAGE
    refusal = await fake.wait_request(route="followup", since=mark)
    assert refusal.json["flags"] & MESSAGE_FLAG_EPHEMERAL and f"<@{fake.owner['id']}>" in refusal.json["content"]

    mark = fake.mark()
    await fake.user_react(thread_id, result_id, "❌", user=fake.stranger)
    removed = await fake.wait_request(route="remove_reaction", since=mark)
    assert removed.vars["user_id"] == fake.stranger["id"] and removed.vars["emoji"] == "❌"
    notice = await fake.wait_request(route="create_message", since=mark)
    assert notice.json["content"].startswith(f"<@{fake.stranger['id']}>")
    assert [str(u) for u in notice.json["allowed_mentions"]["users"]] == [fake.stranger["id"]]
    assert fake.reaction_users(result_id, "❌") == [fake.application_id]
    assert len(conversation.events) == before  # nothing reached the conversation


async def test_buttons_and_reactions_work_after_a_restart(
    fake: FakeDiscord, start_bot: StartBot, tmp_path: Path
) -> None:
    conversation = StandInConversation()
    first = await start_bot(conversation)
    thread_id, _ = await open_post(fake, conversation)
    conversation.owners[thread_id] = fake.owner["id"]
    where = where_for(fake, thread_db_id=7, channel_id=fake.channel_id, thread_id=thread_id)
    mark = fake.mark()
    images = (image_out(tmp_path, "r.png", png_bytes()),)
    await conversation.deliverers["discord"]([Images(where=where, turn_id=31, images=images, buttons=ALL_BUTTONS)])
    result = await fake.wait_request(lambda r: bool(r.files), route="create_message", since=mark)
    result_id = int(result.response["id"])
    await first.close()

    second: PersonaBot = await start_bot(conversation)  # a fresh process: no memory of the result
    assert second is not first and conversation.deliverers["discord"] == second.deliver
    assert conversation.deliver_pending_calls == 2
    count = len(conversation.events)
    click = await fake.send_interaction(fake.component_click(result_id, "persona:approve:31"))
    assert (await fake.wait_callback(click)).json["type"] == CALLBACK_DEFERRED_UPDATE_MESSAGE
    events = await conversation.wait_events(count + 1)
    assert (events[-1].command, events[-1].turn_id, events[-1].thread_id) == ("approve", 31, thread_id)

    second._turns.clear()  # the reaction path reads the turn from the result's buttons
    await fake.user_react(thread_id, result_id, "↩️")
    events = await conversation.wait_events(count + 2)
    assert (events[-1].command, events[-1].turn_id) == ("undo", 31)
    assert fake.requests_for("get_message")


async def test_bad_attachments_get_a_clear_private_answer(fake: FakeDiscord, start_bot: StartBot) -> None:
    conversation = StandInConversation()
    await start_bot(conversation)
    # An expired CDN link: nothing reaches the conversation, the user is told to upload again.
    expired = fake.add_cdn_file("scene.png", png_bytes(), "image/png")
    fake.cdn_available = False
    await fake.send_interaction(fake.slash_command("post", {"persona": "mia", "prompt": "x", "scene": expired}))
    answer = await fake.wait_request(route="followup")
    assert answer.json["flags"] & MESSAGE_FLAG_EPHEMERAL and "upload it again" in answer.json["content"]
    # Too large to be an image we accept: refused without downloading it.
    fake.cdn_available = True
    huge = {**fake.add_cdn_file("huge.png", b"x", "image/png"), "size": 30 * 1024 * 1024}
    mark = fake.mark()
    await fake.send_interaction(fake.slash_command("post", {"persona": "mia", "prompt": "x", "scene": huge}))
    answer = await fake.wait_request(route="followup", since=mark)
    assert "31.5 MB" in answer.json["content"] and answer.json["flags"] & MESSAGE_FLAG_EPHEMERAL
    assert conversation.events == []
    # Not an image at all: the bytes go to the conversation, whose private answer is shown.
    conversation.script = lambda e: [
        Reply(where=where_for(fake), text="notes.txt is not a readable image", private=True)
    ]
    text_file = fake.add_cdn_file("notes.txt", b"hello", "text/plain")
    mark = fake.mark()
    await fake.send_interaction(fake.slash_command("post", {"persona": "mia", "prompt": "x", "scene": text_file}))
    answer = await fake.wait_request(route="followup", since=mark)
    assert answer.json["content"] == "notes.txt is not a readable image"
    assert conversation.events[0].attachments[0].data == b"hello"


async def test_more_than_four_attachments_are_refused_before_any_download(
    fake: FakeDiscord, start_bot: StartBot
) -> None:
    conversation = StandInConversation()
    await start_bot(conversation)
    thread_id, _ = await open_post(fake, conversation)
    conversation.owners[thread_id] = fake.owner["id"]
    count = len(conversation.events)
    fake.cdn_available = False  # a download would fail with "upload it again"
    five = [fake.add_cdn_file(f"scene{i}.png", png_bytes(), "image/png") for i in range(5)]
    mark = fake.mark()
    await fake.user_message(thread_id, "", attachments=five)
    answer = await fake.wait_request(route="create_message", since=mark)
    assert "at most 4 images" in answer.json["content"] and "has 5" in answer.json["content"]
    assert int(fake.owner["id"]) in answer.json["allowed_mentions"]["users"]  # a private answer: it pings
    assert len(conversation.events) == count


async def test_large_results_are_sent_as_jpeg_or_webp_under_the_limit(
    fake: FakeDiscord, start_bot: StartBot, tmp_path: Path
) -> None:
    conversation = StandInConversation()
    big = png_bytes(320, 320, noise=True)
    fake.attachment_size_limit = len(big) // 3
    await start_bot(conversation)
    thread_id, _ = await open_post(fake, conversation)  # the interaction tells the bot the limit
    where = where_for(fake, thread_db_id=7, channel_id=fake.channel_id, thread_id=thread_id)
    image = image_out(tmp_path, "post7-turn2-1.png", big)
    mark = fake.mark()
    await conversation.deliverers["discord"]([Images(where=where, turn_id=2, images=(image,), buttons=ALL_BUTTONS)])
    sent = await fake.wait_request(lambda r: bool(r.files), route="create_message", since=mark)
    assert sent.status == 200 and len(sent.files[0].data) <= fake.attachment_size_limit
    assert sent.files[0].filename in {"post7-turn2-1.jpg", "post7-turn2-1.webp"}
    assert await asyncio.to_thread(Path(image.path).read_bytes) == big  # the PNG stays as it was in storage


async def test_a_413_lowers_the_limit_and_retries(fake: FakeDiscord, start_bot: StartBot, tmp_path: Path) -> None:
    conversation = StandInConversation()
    bot = await start_bot(conversation)  # no interaction yet: the bot assumes the guild's 10 MiB
    big = png_bytes(320, 320, noise=True)
    fake.attachment_size_limit = len(big) // 2
    image = image_out(tmp_path, "r.png", big)
    where = where_for(fake, channel_id=fake.channel_id)
    mark = fake.mark()
    await bot.deliver([Images(where=where, turn_id=0, images=(image,))])
    statuses = [r.status for r in fake.requests_for("create_message", since=mark)]
    assert statuses[0] == 413 and statuses[-1] == 200


async def test_a_failed_delivery_raises_so_it_is_retried(fake: FakeDiscord, start_bot: StartBot) -> None:
    bot = await start_bot(StandInConversation())
    where = where_for(fake, thread_db_id=1, channel_id=fake.channel_id, thread_id=999)
    with pytest.raises(Exception, match="Unknown Channel"):
        await bot.deliver([Reply(where=where, text="result")])


async def test_progress_edits_are_throttled(fake: FakeDiscord, start_bot: StartBot) -> None:
    bot = await start_bot(StandInConversation(), progress_interval=0.3)
    where = where_for(fake, channel_id=fake.channel_id)
    mark = fake.mark()
    await bot.deliver([Progress(where=where, job_id="p", state="running", step=0, total=20)])
    started = asyncio.get_running_loop().time()
    for step in range(1, 20):
        await bot.deliver([Progress(where=where, job_id="p", state="running", step=step, total=20)])
    took = asyncio.get_running_loop().time() - started
    edits = fake.requests_for("edit_message", since=mark)
    assert len(edits) <= 1 + took / 0.3 and len(edits) < 19  # coalesced, not one edit per update
    # The latest update is flushed after the interval, without another update coming.
    last = await fake.wait_request(lambda r: "19/20" in r.json["content"], route="edit_message", since=mark)
    times = [r.at for r in fake.requests_for("edit_message", since=mark)]
    assert all(b - a >= 0.25 for a, b in itertools.pairwise(times))
    assert last.vars["channel_id"] == str(fake.channel_id)
    assert len(fake.requests_for("create_message", since=mark)) == 1  # one status message per job


async def test_without_message_content_intent_instructions_must_mention_the_bot(
    fake: FakeDiscord, start_bot: StartBot
) -> None:
    fake.message_content_allowed = False  # the intent is off in the Developer Portal
    conversation = StandInConversation()
    bot = await start_bot(conversation)
    assert not bot.message_content_enabled and fake.gateway_closes == [4014]  # refused once, then without
    thread_id, _ = await open_post(fake, conversation)
    conversation.owners[thread_id] = fake.owner["id"]
    count = len(conversation.events)
    await fake.user_message(thread_id, "make it sunset")  # arrives with empty content: ignored
    await fake.user_message(thread_id, f"<@{fake.application_id}> make it sunset")
    events = await conversation.wait_events(count + 1)
    assert len(events) == count + 1
    assert (events[-1].kind, events[-1].text, events[-1].thread_id) == (EventKind.MESSAGE, "make it sunset", thread_id)


async def test_messages_of_others_and_outside_post_threads_are_not_instructions(
    fake: FakeDiscord, start_bot: StartBot
) -> None:
    conversation = StandInConversation()
    await start_bot(conversation)
    thread_id, _ = await open_post(fake, conversation)
    conversation.owners[thread_id] = fake.owner["id"]
    count = len(conversation.events)
    await fake.user_message(fake.channel_id, "chatting in the channel")
    await fake.user_message(thread_id, "nice picture!", user=fake.stranger)
    await fake.user_message(thread_id, "warmer light")
    await fake.user_message(thread_id, "and a smile")
    events = await conversation.wait_events(count + 2)
    assert [e.text for e in events[count:]] == ["warmer light", "and a smile"]


async def test_post_from_inside_a_thread_opens_a_new_thread_in_the_parent(
    fake: FakeDiscord, start_bot: StartBot
) -> None:
    conversation = StandInConversation()
    await start_bot(conversation)
    first_thread, _ = await open_post(fake, conversation, thread_db_id=7)

    def script(event: Event) -> list:
        where = where_for(fake, thread_db_id=8, channel_id=event.channel_id)
        return [OpenThread(where=where, title="second post", text="**mia** — second post")]

    conversation.script = script
    mark = fake.mark()
    interaction = await fake.send_interaction(
        fake.slash_command("post", {"persona": "mia", "prompt": "again"}, channel_id=first_thread)
    )
    await conversation.wait_binds(2)
    event = conversation.events[-1]
    assert (event.channel_id, event.thread_id) == (fake.channel_id, first_thread)
    post = await fake.wait_request(route="create_message", since=mark)
    assert post.vars["channel_id"] == str(fake.channel_id) and post.json["content"] == "**mia** — second post"
    second_thread = int(post.response["id"])
    assert conversation.binds[-1] == (8, fake.channel_id, second_thread)
    await fake.wait_request(route="webhook_edit", since=mark)
    assert fake.messages[interaction.original_message_id or 0]["content"] == f"Your post is open: <#{second_thread}>"


async def test_run_discord_starts_the_bot_and_needs_a_token(fake: FakeDiscord) -> None:
    from bot.discord import run_discord
    from storage.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="DISCORD_TOKEN"):
        await run_discord(load_settings(), StandInConversation())
    conversation = StandInConversation()
    settings = load_settings(discord_token=fake.token, discord_api_base=fake.base_url)
    task = asyncio.create_task(run_discord(settings, conversation))
    try:
        await fake.wait_ready()
        await fake.wait_request(route="sync_global_commands")
        assert "discord" in conversation.deliverers
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_run_discord_falls_back_when_discord_refuses_the_intent(fake: FakeDiscord) -> None:
    """Also when the application's flags claim the intent (and when they are 0, as above)."""
    from bot.discord import run_discord
    from storage.settings import load_settings
    from tests.fakes.discord_server import APP_FLAG_GATEWAY_MESSAGE_CONTENT_LIMITED, INTENT_MESSAGE_CONTENT

    # The application claims the intent, but the gateway refuses it (close code 4014).
    fake.message_content_allowed = False
    fake._application_flags = lambda: APP_FLAG_GATEWAY_MESSAGE_CONTENT_LIMITED  # type: ignore[method-assign]
    settings = load_settings(discord_token=fake.token, discord_api_base=fake.api_base)
    task = asyncio.create_task(run_discord(settings, StandInConversation()))
    try:
        await fake.wait_until(
            lambda: any(s.identified and not s.intents & INTENT_MESSAGE_CONTENT for s in fake.sessions)
        )
        assert fake.gateway_closes == [4014]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_missing_permission_is_explained(fake: FakeDiscord, start_bot: StartBot) -> None:
    conversation = StandInConversation()
    await start_bot(conversation)
    fake.forbidden_routes.add("create_thread_from_message")  # no Create Public Threads here

    def script(event: Event) -> list:
        return [OpenThread(where=where_for(fake, thread_db_id=9, channel_id=event.channel_id), title="t", text="post")]

    conversation.script = script
    interaction = await fake.send_interaction(fake.slash_command("post", {"persona": "mia", "prompt": "x"}))
    answer = await fake.wait_request(route="followup")
    assert answer.json["flags"] & MESSAGE_FLAG_EPHEMERAL and "Create Public Threads" in answer.json["content"]
    assert interaction.original_message_id not in fake.messages  # the orphan post message was removed
    assert conversation.binds == [] and fake.threads() == []
    assert conversation.abandoned == [9]  # its jobs are cancelled, not left waiting for a thread


async def test_application_flags_of_zero_do_not_switch_the_intent_off(fake: FakeDiscord, start_bot: StartBot) -> None:
    """Flags are advisory: with the intent allowed by the gateway, plain messages are instructions."""
    fake._application_flags = lambda: 0  # type: ignore[method-assign]
    conversation = StandInConversation()
    bot = await start_bot(conversation)
    assert bot.message_content_enabled and fake.gateway_closes == []
    thread_id, _ = await open_post(fake, conversation)
    conversation.owners[thread_id] = fake.owner["id"]
    count = len(conversation.events)
    await fake.user_message(thread_id, "make it sunset")
    events = await conversation.wait_events(count + 1)
    assert (events[-1].kind, events[-1].text) == (EventKind.MESSAGE, "make it sunset")
