"""A whole WeCom conversation through the REAL commands layer, ending in an approved post.

Callbacks are sealed with wechatpy; replies go to the fake WeCom API. The conversation is
wired as ``bot.app.build_app`` wires it (SQLite, blob store, embedded queue, delivery); only the image
model is replaced by the tests' fake engine (``tests.fakes.engine``), painting small PNGs without torch,
so the test runs in seconds. Waiting is event-driven (the fake API's ``wait_for``), never sleeps.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from PIL import Image

from commands.conversation import Conversation, ConversationConfig
from commands.events import Event, EventKind
from engine.jobs.queue import make_queue
from engine.jobs.runner import JobRunner
from engine.specs import JobKind
from storage.blobs import BlobStore
from storage.db import Database
from storage.models import JobStatus
from storage.repository import Store
from tests.fakes.engine import FakeEngine
from tests.fakes.wecom_api import FakeWeComAPI
from tests.queue.conftest import Recorder
from tests.wecom.harness import AGENT_ID, CORP_ID, SECRET, WeComHarness, card_click_xml, image_xml, wecom_settings

ALICE = "alice.zhang"


def texts(fake: FakeWeComAPI) -> list[str]:
    return fake.texts_to(ALICE)


def result_cards(fake: FakeWeComAPI) -> list[dict]:  # type: ignore[type-arg]
    """Result cards (通过 / 重来 / 撤销), not the role cards under images."""
    cards = [m["template_card"] for m in fake.messages_to(ALICE, "template_card")]
    return [c for c in cards if not c["button_list"][0]["key"].startswith("ref:")]


def role_cards(fake: FakeWeComAPI) -> list[dict]:  # type: ignore[type-arg]
    cards = [m["template_card"] for m in fake.messages_to(ALICE, "template_card")]
    return [c for c in cards if c["button_list"][0]["key"].startswith("ref:")]


@asynccontextmanager
async def wecom_studio(
    tmp_path: Path, *, gated: bool = False
) -> AsyncIterator[tuple[FakeWeComAPI, Store, FakeEngine, Conversation, WeComHarness]]:
    """The conversation wired as ``build_app`` wires it (SQLite, blob store, embedded queue,
    delivery) on the fake engine, behind a WeCom harness talking to the fake WeCom API."""
    async with FakeWeComAPI(CORP_ID, SECRET, AGENT_ID) as fake:
        settings = wecom_settings(
            fake.base_url,
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'ps.db'}",
            blob_dir=str(tmp_path / "blobs"),
            lora_dir=str(tmp_path / "loras"),
        )
        db = Database(settings.database_url)
        await db.upgrade()
        store = Store(db)
        blobs = BlobStore(settings.blob_dir)
        engine = FakeEngine(blobs=blobs, gated=gated)
        queue = make_queue(None, store, lambda bus: JobRunner(engine, store, bus))
        conversation = Conversation(store, blobs, queue, ConversationConfig(lora_dir=settings.lora_dir))
        await conversation.start()
        try:
            async with WeComHarness(conversation, fake=fake) as h:
                yield fake, store, engine, conversation, h
        finally:
            engine.release.set()
            await conversation.close()
            await db.dispose()


async def wait_for(fake: FakeWeComAPI, predicate: Callable[[FakeWeComAPI], bool]) -> None:
    try:
        await fake.wait_for(predicate, within_s=10)
    except TimeoutError:
        raise AssertionError(
            f"timed out; sent so far: {[m.get('msgtype') for m in fake.sent]} texts: {texts(fake)}"
        ) from None


async def test_whole_conversation_ends_in_an_approved_post(tmp_path: Path) -> None:
    async with wecom_studio(tmp_path) as (fake, store, engine, _conversation, h):
        await h.say(ALICE, "帮助")
        await h.settle()
        assert "/post" in texts(fake)[0]

        await h.say(ALICE, "人设 创建 sweet mia")
        await wait_for(fake, lambda f: any(" is ready" in t for t in texts(f)))

        # an image first: a card asks its role; 场景 makes it the scene of the next post
        scene = fake.add_media(_png((200, 10, 10)), "terrace.png", "image/png")
        await h.post(image_xml(ALICE, media_id=scene))
        await h.settle()
        (asked,) = role_cards(fake)
        assert [b["text"] for b in asked["button_list"]] == ["商品", "场景", "人脸"]
        pick = next(b for b in asked["button_list"] if b["text"] == "场景")
        await h.post(card_click_xml(ALICE, event_key=pick["key"], task_id=asked["task_id"], response_code="rc-r"))
        await h.settle()
        assert fake.card_updates[-1]["response_code"] == "rc-r"

        await h.say(ALICE, "发帖 mia 在露台上拿着拿铁")
        await wait_for(fake, lambda f: len(result_cards(f)) == 1)
        post_spec = engine.specs[-1]
        assert post_spec.kind == JobKind.GENERATE and post_spec.context_keys  # the scene went along
        assert [r.role for r in post_spec.references] == ["scene"]

        await h.say(ALICE, "把拿铁举高一点")  # an edit of the current image
        await wait_for(fake, lambda f: len(result_cards(f)) == 2)
        assert engine.specs[-1].prompt == "把拿铁举高一点"

        card = result_cards(fake)[-1]
        approve = next(b for b in card["button_list"] if b["text"] == "通过")
        click = card_click_xml(
            ALICE,
            event_key=approve["key"],
            task_id=card["task_id"],
            response_code="rc-approve",
            create_time=1800000000,
        )
        assert await h.post(click) == (200, b"")
        assert await h.post(click) == (200, b"")  # WeCom's retry: handled once
        await h.settle()

        approvals = [t for t in texts(fake) if "Approved" in t]
        assert len(approvals) == 1
        turn_id = int(approve["key"].split(":")[1])
        assert f"#{turn_id}" in approvals[0]
        turn = await store.get_turn(turn_id)
        assert turn.approved
        # progress stayed sparse: per-step "running" events were not forwarded
        assert sum("开始生成" in t for t in texts(fake)) <= 3
        assert fake.card_updates[-1]["response_code"] == "rc-approve"


def _png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buffer, format="PNG")
    return buffer.getvalue()


async def test_a_post_right_after_persona_create_waits_for_the_persona(tmp_path: Path) -> None:
    """人设 创建 and at once 发帖: no "try again", the post starts once the portrait is stored."""
    # the portrait waits in the engine until the test releases it
    async with wecom_studio(tmp_path, gated=True) as (fake, _store, engine, _conversation, h):
        await h.say(ALICE, "人设 创建 sweet mia")
        await h.say(ALICE, "发帖 mia 在露台上拿着拿铁")
        await h.settle()
        assert any("still being created" in t for t in texts(fake))
        assert not any("⚠️" in t for t in texts(fake))
        engine.release.set()
        await wait_for(fake, lambda f: len(result_cards(f)) == 1)
        kinds = [spec.kind for spec in engine.specs]
        assert kinds == [JobKind.CREATE_PERSONA, JobKind.GENERATE]
        assert engine.specs[1].persona.reference_key  # rendered with the persona as it became


async def test_an_image_becomes_a_product_by_card_or_by_商品_添加(tmp_path: Path) -> None:
    """商品 on an image's card puts it into the next post as a product; 商品 添加 <名字> right after
    an image saves it to the library, and product=<名字> uses it."""
    async with wecom_studio(tmp_path) as (fake, store, engine, conversation, h):
        await h.say(ALICE, "人设 创建 sweet mia")
        await wait_for(fake, lambda f: any(" is ready" in t for t in texts(f)))

        shoe = _png((10, 200, 10))
        await h.post(image_xml(ALICE, media_id=fake.add_media(shoe, "shoe.png", "image/png")))
        await h.settle()
        (asked,) = role_cards(fake)
        pick = next(b for b in asked["button_list"] if b["text"] == "商品")
        await h.post(card_click_xml(ALICE, event_key=pick["key"], task_id=asked["task_id"]))
        await h.settle()
        assert any("商品 product" in t for t in texts(fake))
        await h.say(ALICE, "发帖 mia 穿新鞋")
        await wait_for(fake, lambda f: len(result_cards(f)) == 1)
        spec = engine.specs[-1]
        assert [(r.role, r.key) for r in spec.references] == [("product", hashlib.sha256(shoe).hexdigest())]
        assert spec.context_keys == []  # a product is not the scene

        cup = _png((10, 10, 200))
        await h.post(image_xml(ALICE, media_id=fake.add_media(cup, "cup.png", "image/png")))
        await h.settle()
        await h.say(ALICE, "商品 添加 杯子")
        await h.settle()
        assert any("Product 杯子 saved" in t for t in texts(fake))
        user = await store.user("wecom", ALICE)
        product = await store.find_product(user.id, "杯子")
        assert product is not None and product.image_key == hashlib.sha256(cup).hexdigest()
        await h.say(ALICE, "product=杯子 拿起杯子")  # an edit with the library product
        await wait_for(fake, lambda f: len(result_cards(f)) == 2)
        assert [(r.role, r.name) for r in engine.specs[-1].references] == [
            ("product", None),
            ("product", "杯子"),
        ]
        # the cup went to the library, not into that edit as a waiting image
        assert engine.specs[-1].prompt == "拿起杯子"

        other = await conversation.handle(
            Event(platform="wecom", user_id="bob", kind=EventKind.COMMAND, command="product", args="查看 杯子")
        )
        assert "no product named" in other[0].text.lower()  # type: ignore[attr-defined]


async def test_cancelling_a_training_is_one_message(tmp_path: Path) -> None:
    """Issue 20 item 14: ``/cancel`` of a running training answers once ("❌ Cancelling persona
    training…"); the job's delivery then tells WeCom nothing new (it told "已取消" and
    "Cancelled ❌" after it before)."""
    async with wecom_studio(tmp_path) as (fake, store, engine, conversation, h):
        await h.say(ALICE, "人设 创建 sweet mia")
        await wait_for(fake, lambda f: any(" is ready" in t for t in texts(f)))
        engine.release.clear()  # the training steps (and checks its cancel flag) until cancelled
        started = sum("开始生成" in t for t in texts(fake))
        await h.say(ALICE, "/persona train mia images=2 steps=10")
        await wait_for(fake, lambda f: sum("开始生成" in t for t in texts(f)) == started + 1)  # it runs
        (job,) = await store.user_jobs((await store.user("wecom", ALICE)).id)
        assert job.kind == JobKind.TRAIN_PERSONA

        before = len(fake.messages_to(ALICE))
        recorder = await Recorder(conversation.queue.bus).start()
        try:
            await h.say(ALICE, "/cancel")
            await h.settle()
            await recorder.wait_for(lambda e: e.job_id == job.id and e.state == "cancelled", 10)
        finally:
            await recorder.stop()
        assert (await store.get_job(job.id)).status == JobStatus.CANCELLED
        await conversation.delivery.deliver_job(job.id)  # done by the listener already, or now: once either way
        assert (await store.get_job(job.id)).delivered
        told = fake.messages_to(ALICE)[before:]
        assert [m.get("text", {}).get("content") for m in told] == ["❌ Cancelling persona training (1 job(s))…"]
