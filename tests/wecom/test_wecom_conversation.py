"""A whole WeCom conversation through the REAL commands layer, ending in an approved post.

Callbacks are sealed with wechatpy; replies go to the fake WeCom API. The conversation is
wired as ``bot.app.build_app`` wires it (SQLite, blob store, embedded queue, delivery); only the image
model is replaced by the tests' fake engine (``tests.fakes.engine``), painting small PNGs without torch,
so the test runs in seconds. Waiting is event-driven (the fake API's ``wait_for``), never sleeps.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from commands.conversation import Conversation, ConversationConfig
from engine.job_runner import JobRunner
from engine.queue import make_queue
from engine.specs import JobKind
from storage.blobs import BlobStore
from storage.db import Database
from storage.repository import Store
from tests.fakes.engine import FakeEngine
from tests.fakes.wecom_api import FakeWeComAPI
from tests.wecom.harness import AGENT_ID, CORP_ID, SECRET, WeComHarness, card_click_xml, image_xml, wecom_settings

ALICE = "alice.zhang"


def texts(fake: FakeWeComAPI) -> list[str]:
    return fake.texts_to(ALICE)


async def wait_for(fake: FakeWeComAPI, predicate: Callable[[FakeWeComAPI], bool]) -> None:
    try:
        await fake.wait_for(predicate, within_s=10)
    except TimeoutError:
        raise AssertionError(
            f"timed out; sent so far: {[m.get('msgtype') for m in fake.sent]} texts: {texts(fake)}"
        ) from None


async def test_whole_conversation_ends_in_an_approved_post(tmp_path: Path) -> None:
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
        engine = FakeEngine(blobs=blobs)
        queue = make_queue(None, store, lambda bus: JobRunner(engine, store, bus))
        conversation = Conversation(store, blobs, queue, ConversationConfig(lora_dir=settings.lora_dir))
        await conversation.start()
        try:
            async with WeComHarness(conversation, fake=fake) as h:
                await h.say(ALICE, "帮助")
                await h.settle()
                assert "/post" in texts(fake)[0]

                await h.say(ALICE, "人设 创建 sweet mia")
                await wait_for(fake, lambda f: any(" is ready" in t for t in texts(f)))

                # an image first: the scene of the next post
                scene = fake.add_media(_png((200, 10, 10)), "terrace.png", "image/png")
                await h.post(image_xml(ALICE, media_id=scene))
                await h.settle()

                await h.say(ALICE, "发帖 mia 在露台上拿着拿铁")
                await wait_for(fake, lambda f: len(f.messages_to(ALICE, "template_card")) == 1)
                post_spec = engine.specs[-1]
                assert post_spec.kind == JobKind.GENERATE and post_spec.context_keys  # the scene went along

                await h.say(ALICE, "把拿铁举高一点")  # an edit of the current image
                await wait_for(fake, lambda f: len(f.messages_to(ALICE, "template_card")) == 2)
                assert engine.specs[-1].prompt == "把拿铁举高一点"

                card = fake.messages_to(ALICE, "template_card")[-1]["template_card"]
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
        finally:
            await conversation.close()
            await db.dispose()


def _png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buffer, format="PNG")
    return buffer.getvalue()


async def test_a_post_right_after_persona_create_waits_for_the_persona(tmp_path: Path) -> None:
    """人设 创建 and at once 发帖: no "try again", the post starts once the portrait is stored."""
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
        engine = FakeEngine(blobs=blobs, gated=True)  # the portrait waits in the engine
        queue = make_queue(None, store, lambda bus: JobRunner(engine, store, bus))
        conversation = Conversation(store, blobs, queue, ConversationConfig(lora_dir=settings.lora_dir))
        await conversation.start()
        try:
            async with WeComHarness(conversation, fake=fake) as h:
                await h.say(ALICE, "人设 创建 sweet mia")
                await h.say(ALICE, "发帖 mia 在露台上拿着拿铁")
                await h.settle()
                assert any("still being created" in t for t in texts(fake))
                assert not any("⚠️" in t for t in texts(fake))
                engine.release.set()
                await wait_for(fake, lambda f: len(f.messages_to(ALICE, "template_card")) == 1)
                kinds = [spec.kind for spec in engine.specs]
                assert kinds == [JobKind.CREATE_PERSONA, JobKind.GENERATE]
                assert engine.specs[1].persona.reference_key  # rendered with the persona as it became
        finally:
            engine.release.set()
            await conversation.close()
            await db.dispose()
