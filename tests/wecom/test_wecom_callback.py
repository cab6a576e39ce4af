"""The callback server and the adapter, with a STAND-IN conversation and the fake WeCom API.

Callbacks are encrypted and signed with wechatpy (tests.wecom.harness.WeComSender), not with
bot.wecom.crypto, so a shared mistake cannot hide.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from bot.wecom import CALLBACK_PATH
from commands.events import (
    Action,
    Button,
    Event,
    EventKind,
    FileOut,
    ImageOut,
    Images,
    OpenThread,
    Progress,
    Reply,
    Where,
)
from storage.db import Database
from storage.inbox import Inbox
from tests.fakes.wecom_api import FakeWeComAPI
from tests.wecom.harness import (
    AGENT_ID,
    CORP_ID,
    SECRET,
    TOKEN,
    StandInConversation,
    WeComHarness,
    WeComSender,
    card_click_xml,
    image_xml,
    text_xml,
)

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100
ALICE = "alice.zhang"


def where(user: str = ALICE) -> Where:
    return Where(platform="wecom", user_id=user)


async def test_url_verification_answers_the_plaintext_exactly() -> None:
    async with WeComHarness(StandInConversation()) as h:
        response = await h.get(h.sender.echo("5927782489442352469"))
        assert response.status == 200
        assert await response.read() == b"5927782489442352469"


async def test_url_verification_with_unencoded_plus() -> None:
    async with WeComHarness(StandInConversation()) as h:
        for attempt in range(20):  # find an echostr with a '+' in it and send it unencoded
            params = h.sender.echo(f"echo-{attempt}")
            if "+" in params["echostr"]:
                break
        else:
            pytest.skip("no '+' in 20 echostrs")
        assert h.client is not None
        query = "&".join(f"{k}={v}" for k, v in params.items())
        async with h.client.get(f"{CALLBACK_PATH}?{query}") as response:
            assert response.status == 200
            assert await response.read() == f"echo-{attempt}".encode()


async def test_url_verification_refuses_forgery() -> None:
    async with WeComHarness(StandInConversation()) as h:
        params = h.sender.echo("123")
        forged = dict(params, msg_signature="0" * 40)
        assert (await h.get(forged)).status == 403
        assert (await h.get({k: v for k, v in params.items() if k != "echostr"})).status == 400
        other_corp = WeComSender(corp_id="ww-other").echo("123")
        assert (await h.get(other_corp)).status == 403


async def test_text_command_becomes_an_event_and_reply_is_sent() -> None:
    conversation = StandInConversation(lambda e: [Reply(where=where(e.user_id), text="好的 ok")])
    async with WeComHarness(conversation) as h:
        status, body = await h.say(ALICE, "发帖 mia count=2 拿着拿铁")
        assert (status, body) == (200, b"")
        await h.settle()
        assert conversation.events == [
            Event(
                platform="wecom",
                user_id=ALICE,
                kind=EventKind.COMMAND,
                command="post",
                args="mia count=2 拿着拿铁",
                channel_id=AGENT_ID,
                thread_id=None,
                workspace=CORP_ID,  # the company is the workspace
            )
        ]
        await h.say(ALICE, "/approve")
        await h.say(ALICE, "把拿铁举高一点")
        await h.settle()
        assert [(e.kind, e.command, e.text) for e in conversation.events[1:]] == [
            (EventKind.COMMAND, "approve", ""),
            (EventKind.MESSAGE, None, "把拿铁举高一点"),
        ]
        assert h.fake.texts_to(ALICE) == ["好的 ok"] * 3
        assert conversation.deliverers.keys() == {"wecom"}
        assert conversation.pending_calls == ["wecom"]  # results left from before a restart


async def test_answers_before_the_work_is_done() -> None:
    gate = asyncio.Event()

    async def slow(event: Event) -> list[Action]:
        await gate.wait()
        return [Reply(where=where(), text="done")]

    conversation = StandInConversation(slow)
    async with WeComHarness(conversation) as h:
        status, _ = await asyncio.wait_for(h.say(ALICE, "/status"), timeout=5)
        assert status == 200
        assert h.fake.texts_to(ALICE) == []  # still working in the background
        gate.set()
        await h.settle()
        assert h.fake.texts_to(ALICE) == ["done"]


async def test_retried_message_is_processed_once() -> None:
    conversation = StandInConversation(lambda e: [Reply(where=where(), text="once")])
    async with WeComHarness(conversation) as h:
        message = text_xml(ALICE, "/history", msg_id="1234567890123456789")
        results = [await h.post(message) for _ in range(3)]  # WeCom's three tries, each sealed anew
        assert results == [(200, b"")] * 3
        await h.settle()
        assert len(conversation.events) == 1
        assert h.fake.texts_to(ALICE) == ["once"]
        await h.post(text_xml(ALICE, "/history", msg_id="1234567890123456790"))
        await h.settle()
        assert len(conversation.events) == 2


async def test_duplicate_event_is_processed_once_and_maps_to_a_reaction() -> None:
    conversation = StandInConversation()
    async with WeComHarness(conversation) as h:
        click = card_click_xml(ALICE, event_key="approve:42", response_code="code-1", create_time=1700000000)
        assert await h.post(click) == (200, b"")
        assert await h.post(click) == (200, b"")
        await h.post(card_click_xml(ALICE, event_key="undo:43", create_time=1700000005))
        await h.settle()
        assert conversation.events == [
            Event(
                platform="wecom",
                user_id=ALICE,
                kind=EventKind.REACTION,
                command="approve",
                turn_id=42,
                channel_id=AGENT_ID,
                workspace=CORP_ID,
            ),
            Event(
                platform="wecom",
                user_id=ALICE,
                kind=EventKind.REACTION,
                command="undo",
                turn_id=43,
                channel_id=AGENT_ID,
                workspace=CORP_ID,
            ),
        ]
        # the clicked card is greyed out with its response code
        assert h.fake.card_updates[0]["response_code"] == "code-1"
        assert h.fake.card_updates[0]["button"] == {"replace_name": "已通过"}


async def test_unknown_card_keys_and_other_events_are_ignored() -> None:
    conversation = StandInConversation()
    async with WeComHarness(conversation) as h:
        await h.post(card_click_xml(ALICE, event_key="launch:1", create_time=1700000100))
        enter = (
            f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><FromUserName><![CDATA[{ALICE}]]>"
            "</FromUserName><CreateTime>1700000200</CreateTime><MsgType><![CDATA[event]]></MsgType>"
            f"<Event><![CDATA[enter_agent]]></Event><AgentID>{AGENT_ID}</AgentID></xml>"
        )
        assert await h.post(enter) == (200, b"")
        await h.settle()
        assert conversation.events == []


async def test_forged_signature_is_refused_and_never_processed() -> None:
    conversation = StandInConversation()
    async with WeComHarness(conversation) as h:
        params, body = h.sender.envelope(text_xml(ALICE, "/help"))
        forged = dict(params, msg_signature="f" * 40)
        assert (await h.post_raw(forged, body))[0] == 403
        assert (await h.post_raw({k: v for k, v in params.items() if k != "msg_signature"}, body))[0] == 400
        impostor = WeComSender(token="guessed-token")  # right key, wrong token
        assert (await h.post(text_xml(ALICE, "/help"), sender=impostor))[0] == 403
        tampered = body.replace(b"<Encrypt><![CDATA[", b"<Encrypt><![CDATA[AAAA")  # changed after signing
        assert tampered != body
        assert (await h.post_raw(params, tampered))[0] == 403
        await h.settle()
        assert conversation.events == [] and h.bot.processed == 0
        assert h.fake.sent == []
        # the genuine one still goes through (and was not burnt by the forgeries)
        assert (await h.post_raw(params, body))[0] == 200
        await h.settle()
        assert len(conversation.events) == 1


async def test_wrong_corp_id_is_refused() -> None:
    conversation = StandInConversation()
    async with WeComHarness(conversation) as h:
        other = WeComSender(corp_id="ww-another-corp")  # same token and key, receiveid differs
        assert (await h.post(text_xml(ALICE, "/help", corp_id="ww-another-corp"), sender=other))[0] == 403
        params, body = h.sender.envelope(text_xml(ALICE, "/help"), to_user="ww-another-corp")
        assert (await h.post_raw(params, body))[0] == 403
        inner_wrong = text_xml(ALICE, "/help", corp_id="ww-another-corp")  # right envelope, wrong ToUserName
        assert (await h.post(inner_wrong))[0] == 403
        await h.settle()
        assert conversation.events == []


@pytest.mark.parametrize(
    "body",
    [
        b"not xml at all",
        b"<xml><Encrypt>unterminated",
        b"<xml><ToUserName>x</ToUserName></xml>",  # no Encrypt
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><xml><Encrypt>&a;</Encrypt></xml>',
        b"<other><Encrypt>abc</Encrypt></other>",
        b"",
    ],
)
async def test_malformed_outer_xml_is_refused(body: bytes) -> None:
    conversation = StandInConversation()
    async with WeComHarness(conversation) as h:
        params, _ = h.sender.envelope(text_xml(ALICE, "/help"))
        assert (await h.post_raw(params, body))[0] == 400
        assert conversation.events == []


BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY lol "lol">'
    + "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10 if i > 1 else "&lol;" * 10}">' for i in range(1, 10))
    + "]>"
)


async def test_a_billion_laughs_is_refused_unexpanded_outside_and_inside_the_envelope() -> None:
    conversation = StandInConversation()
    async with WeComHarness(conversation) as h:
        params, _ = h.sender.envelope(text_xml(ALICE, "/help"))
        outer = f"{BILLION_LAUGHS}<xml><ToUserName>{CORP_ID}</ToUserName><Encrypt>&lol9;</Encrypt></xml>"
        assert (await h.post_raw(params, outer.encode()))[0] == 400
        # correctly signed and encrypted: the entities are in the decrypted message itself
        inner = f"{BILLION_LAUGHS}<xml><FromUserName>{ALICE}</FromUserName><MsgType>text</MsgType>"
        inner += "<Content>&lol9;</Content><MsgId>1</MsgId></xml>"
        assert (await h.post(inner))[0] == 400
        await h.settle()
        assert conversation.events == [] and h.bot.processed == 0
        assert h.fake.texts_to(ALICE) == []


async def test_malformed_inner_xml_is_refused() -> None:
    conversation = StandInConversation()
    async with WeComHarness(conversation) as h:
        assert (await h.post("<xml><FromUserName>alice</FromUserName><MsgType>text"))[0] == 400
        assert (await h.post("<xml><MsgType>text</MsgType></xml>"))[0] == 400  # no FromUserName
        await h.settle()
        assert conversation.events == []


async def test_oversized_body_is_refused_with_413() -> None:
    conversation = StandInConversation()
    async with WeComHarness(conversation) as h:
        params, body = h.sender.envelope(text_xml(ALICE, "x" * 2_000_000))
        assert len(body) > 1_000_000
        assert (await h.post_raw(params, body))[0] == 413

        async def chunks():  # no Content-Length: refused while reading
            for _ in range(40):
                yield b"<" * 65536

        assert h.client is not None
        async with h.client.post(CALLBACK_PATH, params=params, data=chunks()) as response:
            assert response.status == 413
        await h.settle()
        assert conversation.events == []


async def test_image_message_is_downloaded_and_handed_over() -> None:
    conversation = StandInConversation(lambda e: [Reply(where=where(), text="参考图已收到")])
    async with WeComHarness(conversation) as h:
        media_id = h.fake.add_media(b"\xff\xd8\xff\xe0jpegdata", "scene.jpg", "image/jpeg")
        await h.post(image_xml(ALICE, media_id=media_id, pic_url=h.fake.pic_url(media_id)))
        await h.settle()
        (event,) = conversation.events
        assert event.kind is EventKind.MESSAGE and event.text == "" and event.thread_id is None
        (attachment,) = event.attachments
        assert attachment.data == b"\xff\xd8\xff\xe0jpegdata"
        assert attachment.content_type == "image/jpeg" and attachment.filename == "scene.jpg"
        assert ("media/get", 0) in h.fake.calls
        assert h.fake.texts_to(ALICE) == ["参考图已收到"]


async def test_image_falls_back_to_pic_url() -> None:
    conversation = StandInConversation()
    async with WeComHarness(conversation) as h:
        media_id = h.fake.add_media(PNG, "p.png", "image/png")
        h.fake.fail_next("media/get", 40007)
        await h.post(image_xml(ALICE, media_id=media_id, pic_url=h.fake.pic_url(media_id)))
        await h.settle()
        assert conversation.events[0].attachments[0].data == PNG


def _result_images(tmp_path: Path, turn_id: int = 7) -> Images:
    outs = []
    for index in range(2):
        path = tmp_path / f"r{index}.png"
        path.write_bytes(PNG + bytes([index]))
        outs.append(ImageOut(blob_key=f"k{index}", path=str(path), filename=f"r{index}.png"))
    return Images(
        where=where(),
        turn_id=turn_id,
        job_id="job-1",
        text="mia · 露台",
        images=tuple(outs),
        buttons=(Button.APPROVE, Button.REGEN, Button.UNDO, Button.CANCEL),
    )


async def test_result_images_are_uploaded_and_get_a_card(tmp_path: Path) -> None:
    async with WeComHarness(StandInConversation()) as h:
        await h.bot.deliver([_result_images(tmp_path)])
        kinds = [m["msgtype"] for m in h.fake.messages_to(ALICE)]
        assert kinds == ["image", "image", "template_card"]
        uploaded = [h.fake.uploads[m["image"]["media_id"]].data for m in h.fake.messages_to(ALICE, "image")]
        assert uploaded == [PNG + b"\x00", PNG + b"\x01"]
        card = h.fake.messages_to(ALICE, "template_card")[0]["template_card"]
        assert card["card_type"] == "button_interaction"
        assert [(b["text"], b["key"]) for b in card["button_list"]] == [
            ("通过", "approve:7"),
            ("重来", "regen:7"),
            ("撤销", "undo:7"),
        ]
        assert card["main_title"]["desc"] == "mia · 露台"


async def test_a_click_on_a_sent_card_comes_back_as_its_reaction(tmp_path: Path) -> None:
    conversation = StandInConversation()
    async with WeComHarness(conversation) as h:
        await h.bot.deliver([_result_images(tmp_path, turn_id=99)])
        card = h.fake.messages_to(ALICE, "template_card")[0]["template_card"]
        regen = next(b for b in card["button_list"] if b["text"] == "重来")
        await h.post(card_click_xml(ALICE, event_key=regen["key"], task_id=card["task_id"]))
        await h.settle()
        assert [(e.kind, e.command, e.turn_id) for e in conversation.events] == [(EventKind.REACTION, "regen", 99)]


async def test_progress_is_sent_once_per_state() -> None:
    async with WeComHarness(StandInConversation()) as h:
        steps = [Progress(where=where(), job_id="j1", state="running", step=s, total=8) for s in range(1, 9)]
        await h.bot.deliver([Progress(where=where(), job_id="j1", state="queued", position=2)])
        await h.bot.deliver([Progress(where=where(), job_id="j1", state="queued", position=1)])
        await h.bot.deliver(steps)
        await h.bot.deliver([Progress(where=where(), job_id="j1", state="done")])
        await h.bot.deliver([Progress(where=where(), job_id="j2", state="running", step=1, total=8)])
        texts = h.fake.texts_to(ALICE)
        assert len(texts) == 4
        assert "排队" in texts[0] and "2" in texts[0]
        assert "开始" in texts[1] and "完成" in texts[2] and "开始" in texts[3]


async def test_a_final_state_told_by_the_next_message_is_one_message() -> None:
    """Issue 20 item 14: a cancelled job's delivery (its state, then "Cancelled ❌") is one WeCom
    message, not two (with the /cancel's own answer, cancelling a training was three)."""
    async with WeComHarness(StandInConversation()) as h:
        await h.bot.deliver(
            [Progress(where=where(), job_id="t1", state="cancelled"), Reply(where=where(), text="Cancelled ❌")]
        )
        await h.bot.deliver([Progress(where=where(), job_id="t2", state="cancelled")])  # alone: still said
        # the answer to the user's /cancel told it already: nothing more
        await h.bot.deliver([Progress(where=where(), job_id="t3", state="cancelled", told=True)])
        assert h.fake.texts_to(ALICE) == ["Cancelled ❌", "❌ 已取消。Cancelled."]


async def test_other_actions_render(tmp_path: Path) -> None:
    async with WeComHarness(StandInConversation()) as h:
        long_reply = "历史记录：" + "第1版 露台 拿铁；" * 400
        await h.bot.deliver(
            [
                OpenThread(where=where(), title="mia · 拿铁", text="已开始新帖 **mia**"),
                Reply(where=where(), text=long_reply, private=True),
                FileOut(where=where(), filename="post-3.zip", data=b"PK\x03\x04" + b"z" * 50, text="导出完成"),
            ]
        )
        texts = h.fake.texts_to(ALICE)
        assert texts[0] == "已开始新帖 mia"
        assert "".join(texts[1:-1]) == long_reply and len(texts) > 3
        assert texts[-1] == "导出完成"
        (file_message,) = h.fake.messages_to(ALICE, "file")
        assert h.fake.uploads[file_message["file"]["media_id"]].filename == "post-3.zip"


async def test_deliver_raises_when_a_result_cannot_be_sent(tmp_path: Path) -> None:
    async with WeComHarness(StandInConversation()) as h:
        h.fake.fail_next("media/upload", 45009)
        with pytest.raises(Exception) as info:
            await h.bot.deliver([_result_images(tmp_path)])
        assert getattr(info.value, "errcode", None) == 45009
        # progress failures are not errors of delivery
        h.fake.fail_next("message/send", 45009)
        await h.bot.deliver([Progress(where=where(), job_id="j9", state="queued")])


async def test_token_expiry_recovery_in_a_conversation(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    conversation = StandInConversation(lambda e: [Reply(where=where(), text=f"re: {e.command}")])
    async with WeComHarness(conversation) as h:
        await h.say(ALICE, "/status")
        await h.settle()
        h.fake.expire_token()
        await h.say(ALICE, "/help")
        await h.settle()
        h.fake.invalidate_token()
        await h.say(ALICE, "帮助")
        await h.settle()
        assert h.fake.texts_to(ALICE) == ["re: status", "re: help", "re: help"]
        assert h.fake.gettoken_calls == 3
    for secret in (SECRET, TOKEN, "token-"):
        assert secret not in caplog.text


async def test_handler_failure_tells_the_user() -> None:
    def boom(event: Event) -> list[Action]:
        raise RuntimeError("bug")

    async with WeComHarness(StandInConversation(boom)) as h:
        await h.say(ALICE, "/status")
        await h.settle()
        assert "出错" in h.fake.texts_to(ALICE)[0]


async def test_retries_to_two_processes_are_processed_once(tmp_path: Path) -> None:
    """Two front ends on one database: the inbox's unique key is the shared dedupe (no redis)."""
    first, second = StandInConversation(), StandInConversation()
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}")
    await db.upgrade()
    async with FakeWeComAPI(CORP_ID, SECRET, AGENT_ID) as fake:
        async with (
            WeComHarness(first, fake=fake, inbox=Inbox(db)) as a,
            WeComHarness(second, fake=fake, inbox=Inbox(db)) as b,
        ):
            message = text_xml(ALICE, "/status", msg_id="555000111")
            assert (await a.post(message))[0] == 200
            assert (await b.post(message))[0] == 200
            click = card_click_xml(ALICE, event_key="approve:1", create_time=1700000999)
            assert (await b.post(click))[0] == 200
            assert (await a.post(click))[0] == 200
            await a.settle()
            await b.settle()
        assert len(first.events) == 1 and len(second.events) == 1
        assert {first.events[0].kind, second.events[0].kind} == {EventKind.COMMAND, EventKind.REACTION}
    await db.dispose()
