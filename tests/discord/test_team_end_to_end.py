"""A team on Discord, end to end (the real discord.py client, the fake Discord, the real
conversation, the tiny engine): in one server an admin (Manage Server) and two members — one
posts with the admin's persona, the other is made reviewer; a second server sees none of it
(names, autocomplete, ids). The review round trip: the author's ✅ submits, the reviewers are
mentioned in the thread with Approve / Request changes, changes are requested with a reason,
then the next turn is approved. A member's delete and train of the admin's persona are refused."""

from __future__ import annotations

from typing import Any

from commands.events import Event, EventKind
from storage.models import ThreadStatus
from tests.discord import test_end_to_end as e2e
from tests.discord.conftest import StartBot
from tests.discord.test_end_to_end import JOB_TIMEOUT_S, Studio, content, custom_ids, turn_of, wait_result
from tests.fakes.discord_server import CALLBACK_AUTOCOMPLETE_RESULT, MESSAGE_FLAG_EPHEMERAL, FakeDiscord

# the end-to-end module's fixtures: its tiny engine and a fresh app per test
tiny_engine = e2e.tiny_engine
studio = e2e.studio


async def slash(fake: FakeDiscord, name: str, options: dict[str, Any], **kw: Any) -> str:
    """Run a slash command; the text that answered it (the edited response or a followup)."""
    mark = fake.mark()
    await fake.send_interaction(fake.slash_command(name, options, **kw))
    answer = await fake.wait_request(lambda r: r.route in ("webhook_edit", "followup") and bool(content(r)), since=mark)
    return content(answer)


async def completions(fake: FakeDiscord, user: dict[str, Any], channel_id: int) -> list[str]:
    auto = await fake.send_interaction(
        fake.slash_command("post", {"persona": "", "prompt": "x"}, focused="persona", user=user, channel_id=channel_id)
    )
    callback = await fake.wait_callback(auto)
    assert callback.json["type"] == CALLBACK_AUTOCOMPLETE_RESULT
    return [c["value"] for c in callback.json["data"]["choices"]]


async def test_a_team_in_one_server_and_nothing_across_servers(
    studio: Studio, fake: FakeDiscord, start_bot: StartBot
) -> None:
    shop = fake.add_guild("Shop")
    channel = fake.add_text_channel(shop, "studio")
    lead, ann, bob = fake.add_user("lead"), fake.add_user("ann"), fake.add_user("bob")
    fake.add_member(shop, lead, manager=True)
    for user in (fake.bot_user, ann, bob):
        fake.add_member(shop, user)
    rival = fake.add_guild("Rival")
    rival_channel = fake.add_text_channel(rival, "general")
    eve = fake.add_user("eve")
    for user in (fake.bot_user, eve):
        fake.add_member(rival, user)
    await start_bot(studio.app.conversation, guild_sync=False)  # global commands: every server has them
    store = studio.app.store

    # the admin (Manage Server) turns review on and makes bob a reviewer; a member may not
    assert "Only an admin" in await slash(
        fake, "team", {"switch": "on"}, subcommand="review", user=ann, channel_id=channel
    )
    assert "Review is on" in await slash(
        fake, "team", {"switch": "on"}, subcommand="review", user=lead, channel_id=channel
    )
    said = await slash(
        fake, "team", {"user": f"<@{bob['id']}>", "role": "reviewer"}, subcommand="role", user=lead, channel_id=channel
    )
    assert "is now reviewer" in said
    workspace = await store.workspace("discord", str(shop))
    assert workspace.name == "Shop" and workspace.review
    lead_user, ann_user, bob_user = [await store.user("discord", u["id"]) for u in (lead, ann, bob)]
    assert await store.role_of(workspace.id, lead_user.id) == "admin"
    assert await store.role_of(workspace.id, bob_user.id) == "reviewer"

    # the admin's persona, used by ann; bob may neither delete nor train it
    mix = studio.engine.draw_mix("sweet", 7)
    mia = await store.create_persona(lead_user.id, "mia", "sweet", mix, 7, workspace_id=workspace.id)
    await store.persona_ready(mia.id, None, None, mix)
    for sub in ("delete", "train"):
        refused = await slash(fake, "persona", {"name": "mia"}, subcommand=sub, user=bob, channel_id=channel)
        assert "Only the creator of persona mia" in refused
    assert await store.find_persona_in(workspace.id, "mia") is not None

    # the second server: no "mia" in autocomplete or by name, the first server's ids are no use there
    assert await completions(fake, ann, channel) == ["mia"]
    assert await completions(fake, eve, rival_channel) == []
    refused = await slash(fake, "post", {"persona": "mia", "prompt": "x"}, user=eve, channel_id=rival_channel)
    assert "no persona named 'mia' here" in refused

    # ann posts with the admin's persona: the same persona id
    mark = fake.mark()
    await fake.send_interaction(
        fake.slash_command("post", {"persona": "mia", "prompt": "latte on a terrace"}, user=ann, channel_id=channel)
    )
    created = await fake.wait_request(route="create_thread_from_message", since=mark)
    thread_id = int(created.response["id"])
    first = await wait_result(fake, thread_id, since=mark, text="Generate #")
    post = await store.find_thread("discord", thread_id)
    assert (post.persona_id, post.owner_id, post.workspace_id) == (mia.id, ann_user.id, workspace.id)
    turn = turn_of(first)
    stranger = await studio.app.conversation.handle(
        Event(
            platform="discord",
            user_id=eve["id"],
            kind=EventKind.REACTION,
            command="approve",
            turn_id=turn,
            workspace=str(rival),
        )
    )
    assert "no longer exists" in stranger[0].text  # type: ignore[attr-defined]

    # ann's ✅ submits: "in review", the reviewers (bob, and the admin) mentioned with two buttons
    mark = fake.mark()
    await fake.send_interaction(fake.component_click(int(first.response["id"]), f"persona:approve:{turn}", user=ann))
    request = await fake.wait_request(lambda r: "Review, please" in content(r), route="create_message", since=mark)
    assert request.vars["channel_id"] == str(thread_id)
    assert f"<@{bob['id']}>" in content(request) and f"<@{lead['id']}>" in content(request)
    assert f"<@{ann['id']}>" not in content(request)
    assert custom_ids(request) == [f"persona:review:approve:{turn}", f"persona:review:reject:{turn}"]
    assert (await store.get_thread(post.id)).status == ThreadStatus.IN_REVIEW
    assert not (await store.get_turn(turn)).approved  # the author cannot approve her own post

    # bob: Request changes asks for the reason (only he sees it); /reject sends it to the thread
    mark = fake.mark()
    await fake.send_interaction(
        fake.component_click(int(request.response["id"]), f"persona:review:reject:{turn}", user=bob)
    )
    asked = await fake.wait_request(lambda r: "What should change" in content(r), route="followup", since=mark)
    assert asked.json["flags"] & MESSAGE_FLAG_EPHEMERAL
    sent_back = await slash(fake, "reject", {"reason": "too dark"}, user=bob, channel_id=thread_id)
    assert "requested changes" in sent_back and "too dark" in sent_back
    assert (await store.get_thread(post.id)).status == ThreadStatus.OPEN

    # ann edits and submits again; bob's Approve approves
    mark = fake.mark()
    await fake.user_message(thread_id, "brighter", user=ann)
    edited = await wait_result(fake, thread_id, since=mark, text="Edit #")
    second = turn_of(edited)
    mark = fake.mark()
    await fake.send_interaction(fake.component_click(int(edited.response["id"]), f"persona:approve:{second}", user=ann))
    request = await fake.wait_request(lambda r: "Review, please" in content(r), route="create_message", since=mark)
    mark = fake.mark()
    await fake.send_interaction(
        fake.component_click(int(request.response["id"]), f"persona:review:approve:{second}", user=bob)
    )
    approved = await fake.wait_request(lambda r: "Approved turn" in content(r), since=mark, timeout_s=JOB_TIMEOUT_S)
    assert "(by Bob)" in content(approved)
    assert (await store.get_turn(second)).approved
    assert (await store.get_thread(post.id)).status == ThreadStatus.APPROVED
    actions = [str(e.action) for e in await store.activity(post.id)]
    assert actions == ["created", "submitted", "sent_back", "edited", "submitted", "approved"]
