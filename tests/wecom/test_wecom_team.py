"""Three users of one WeCom company in one workspace, through the REAL commands layer: the admin
(ADMIN_IDS) makes a persona and turns review on, a member posts with it, a reviewer gets a card
(通过 / 退回) for the submitted post, sends it back with a reason, then approves the next turn.
The export's manifest.json carries the activity log; a member's delete of the admin's persona is
refused. The fake engine paints small PNGs (no torch): the round trip takes seconds."""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import replace
from pathlib import Path

from storage.models import ThreadStatus
from tests.fakes.wecom_api import FakeWeComAPI
from tests.wecom.harness import CORP_ID, card_click_xml
from tests.wecom.test_wecom_conversation import wait_for, wecom_studio

LEAD, BOB, CAROL = "lead.wang", "bob.li", "carol.zhao"


def cards(fake: FakeWeComAPI, user: str) -> list[dict]:  # type: ignore[type-arg]
    return [m["template_card"] for m in fake.messages_to(user, "template_card")]


def review_cards(fake: FakeWeComAPI, user: str) -> list[dict]:  # type: ignore[type-arg]
    return [c for c in cards(fake, user) if [b["text"] for b in c["button_list"]] == ["通过", "退回"]]


def result_cards(fake: FakeWeComAPI, user: str) -> list[dict]:  # type: ignore[type-arg]
    return [c for c in cards(fake, user) if c["button_list"][0]["text"] == "通过" and len(c["button_list"]) == 3]


def said(fake: FakeWeComAPI, user: str, text: str) -> bool:
    return any(text in t for t in fake.texts_to(user))


async def test_review_round_trip_with_three_users_of_one_company(tmp_path: Path) -> None:
    async with wecom_studio(tmp_path) as (fake, store, _engine, conversation, h):
        conversation.config = replace(conversation.config, admin_ids=(f"wecom:{LEAD}",))
        await h.say(LEAD, "人设 创建 sweet mia")
        await wait_for(fake, lambda f: said(f, LEAD, " is ready"))
        await h.say(CAROL, "团队")  # carol joins the company's workspace
        await h.settle()
        await h.say(LEAD, f"团队 角色 {LEAD} 管理员")  # ADMIN_IDS may; a stored admin is asked to review too
        await h.say(LEAD, f"团队 角色 {CAROL} 审核员")
        await h.say(LEAD, "团队 审核 开")
        await h.settle()
        assert said(fake, LEAD, "is now reviewer") and said(fake, LEAD, "Review is on")
        company = await store.workspace("wecom", CORP_ID)
        assert company.review

        # bob, a member, posts with the lead's persona; he may not delete it
        await h.say(BOB, "人设 删除 mia")
        await h.settle()
        assert said(fake, BOB, "Only the creator of persona mia")
        await h.say(BOB, "发帖 mia 拿着拿铁")
        await wait_for(fake, lambda f: len(result_cards(f, BOB)) == 1)
        bob = await store.user("wecom", BOB)
        post = await store.get_thread((await store.get_user(bob.id)).current_thread_id)
        assert post.workspace_id == company.id and post.owner_id == bob.id

        # bob's 通过 submits: the post is in review, each reviewer (carol, and the lead: an admin) gets a card
        first = result_cards(fake, BOB)[-1]
        approve = next(b for b in first["button_list"] if b["text"] == "通过")
        await h.post(card_click_xml(BOB, event_key=approve["key"], task_id=first["task_id"], response_code="rc-b1"))
        await wait_for(fake, lambda f: len(review_cards(f, CAROL)) == 1 and len(review_cards(f, LEAD)) == 1)
        turn_id = int(approve["key"].split(":")[1])
        assert (await store.get_thread(post.id)).status == ThreadStatus.IN_REVIEW
        assert not (await store.get_turn(turn_id)).approved  # the author cannot approve his own post
        assert said(fake, BOB, "in review")
        assert fake.messages_to(CAROL, "image")  # the reviewer sees the submitted image
        assert said(fake, CAROL, f"Review, please: post #{post.id}")

        # carol: 退回 asks for the reason; 退回 <原因> sends it back to bob, the post is open again
        card = review_cards(fake, CAROL)[-1]
        reject = next(b for b in card["button_list"] if b["text"] == "退回")
        assert reject["key"] == f"reject:{turn_id}"
        await h.post(card_click_xml(CAROL, event_key=reject["key"], task_id=card["task_id"], response_code="rc-c1"))
        await wait_for(fake, lambda f: said(f, CAROL, "What should change"))
        await h.say(CAROL, "退回 颜色太暗")
        await wait_for(fake, lambda f: said(f, BOB, "requested changes"))
        assert said(fake, BOB, "颜色太暗")
        assert (await store.get_thread(post.id)).status == ThreadStatus.OPEN

        # bob edits and submits again; carol's 通过 approves, bob hears it
        await h.say(BOB, "亮一点")
        await wait_for(fake, lambda f: len(result_cards(f, BOB)) == 2)
        second = result_cards(fake, BOB)[-1]
        approve2 = next(b for b in second["button_list"] if b["text"] == "通过")
        await h.post(card_click_xml(BOB, event_key=approve2["key"], task_id=second["task_id"], response_code="rc-b2"))
        await wait_for(fake, lambda f: len(review_cards(f, CAROL)) == 2)
        card2 = review_cards(fake, CAROL)[-1]
        ok = next(b for b in card2["button_list"] if b["text"] == "通过")
        await h.post(card_click_xml(CAROL, event_key=ok["key"], task_id=card2["task_id"], response_code="rc-c2"))
        await wait_for(fake, lambda f: said(f, BOB, f"(by {CAROL})"))
        approved = int(ok["key"].split(":")[1])
        assert (await store.get_turn(approved)).approved and not (await store.get_turn(turn_id)).approved
        assert (await store.get_thread(post.id)).status == ThreadStatus.APPROVED

        # the export: approved turns only, and the activity log in manifest.json
        await h.say(BOB, "导出")
        await wait_for(fake, lambda f: bool(f.messages_to(BOB, "file")))
        manifest = json.loads(zipfile.ZipFile(io.BytesIO(_exported(fake, BOB))).read("manifest.json"))
        steps = [(a["who"], a["action"]) for a in manifest["activity"]]
        assert steps == [
            (BOB, "created"),
            (BOB, "submitted"),
            (CAROL, "sent_back"),
            (BOB, "edited"),
            (BOB, "submitted"),
            (CAROL, "approved"),
        ]
        assert manifest["activity"][2]["detail"] == "颜色太暗"
        assert [t["id"] for t in manifest["turns"] if t["approved"]] == [approved]


def _exported(fake: FakeWeComAPI, user: str) -> bytes:
    """The bytes of the last file sent to ``user`` (the fake keeps uploads by media id)."""
    media_id = fake.messages_to(user, "file")[-1]["file"]["media_id"]
    return fake.uploads[media_id].data
