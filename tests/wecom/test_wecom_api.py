"""bot.wecom.api against the fake WeCom API: tokens, errors, splitting, uploads, cards, limits."""

from __future__ import annotations

import logging

import aiohttp
import pytest

from bot.wecom.api import WeComAPI, WeComAPIError, text_pieces
from bot.wecom.rate_limit import RateLimiter
from bot.wecom.tokens import MemoryTokenStore, RedisTokenStore, token_key
from tests.fakes.wecom_api import FakeWeComAPI
from tests.wecom.conftest import FakeClock
from tests.wecom.harness import AGENT_ID, CORP_ID, SECRET

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def make_api(fake: FakeWeComAPI, http: aiohttp.ClientSession, **kwargs: object) -> WeComAPI:
    return WeComAPI(corp_id=CORP_ID, secret=SECRET, agent_id=AGENT_ID, session=http, base_url=fake.base_url, **kwargs)  # type: ignore[arg-type]


async def test_token_is_fetched_once_and_cached(fake_wecom: FakeWeComAPI, http: aiohttp.ClientSession) -> None:
    api = make_api(fake_wecom, http)
    await api.send_text("alice", "one")
    await api.send_text("alice", "two")
    assert fake_wecom.gettoken_calls == 1
    assert fake_wecom.texts_to("alice") == ["one", "two"]


async def test_token_refreshed_before_expiry(
    fake_wecom: FakeWeComAPI, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    api = make_api(fake_wecom, http, token_store=MemoryTokenStore(clock=clock))
    await api.send_text("alice", "one")
    clock.now += 6000  # 7200 s token, refreshed 300 s early: still good
    await api.send_text("alice", "two")
    assert fake_wecom.gettoken_calls == 1
    clock.now += 950  # now within the last 300 s
    await api.send_text("alice", "three")
    assert fake_wecom.gettoken_calls == 2
    assert fake_wecom.texts_to("alice") == ["one", "two", "three"]


@pytest.mark.parametrize("knob,errcode", [("expire_token", 42001), ("invalidate_token", 40014)])
async def test_token_error_refreshes_once_and_retries(
    fake_wecom: FakeWeComAPI, http: aiohttp.ClientSession, knob: str, errcode: int
) -> None:
    api = make_api(fake_wecom, http)
    await api.send_text("alice", "before")
    getattr(fake_wecom, knob)()
    await api.send_text("alice", "after")
    assert fake_wecom.gettoken_calls == 2  # exactly one extra gettoken
    assert ("message/send", errcode) in fake_wecom.calls
    assert fake_wecom.texts_to("alice") == ["before", "after"]
    # uploads (multipart bodies are rebuilt for the retry) and downloads recover the same way
    getattr(fake_wecom, knob)()
    media_id = await api.upload_image(PNG, "r.png")
    assert fake_wecom.uploads[media_id].data == PNG
    getattr(fake_wecom, knob)()
    media = await api.download_media(media_id)
    assert media.data == PNG and media.filename == "r.png"
    assert fake_wecom.gettoken_calls == 4


async def test_persistent_token_error_is_raised_after_one_retry(
    fake_wecom: FakeWeComAPI, http: aiohttp.ClientSession
) -> None:
    api = make_api(fake_wecom, http)
    fake_wecom.fail_next("message/send", 40014, times=3)
    with pytest.raises(WeComAPIError) as info:
        await api.send_text("alice", "hi")
    assert info.value.errcode == 40014
    assert fake_wecom.gettoken_calls == 2
    assert [c for c in fake_wecom.calls if c[0] == "message/send"] == [("message/send", 40014)] * 2


async def test_other_errors_are_not_retried(fake_wecom: FakeWeComAPI, http: aiohttp.ClientSession) -> None:
    api = make_api(fake_wecom, http)
    fake_wecom.fail_next("message/send", 45009)
    with pytest.raises(WeComAPIError) as info:
        await api.send_text("alice", "hi")
    assert info.value.errcode == 45009
    assert fake_wecom.gettoken_calls == 1


async def test_bad_secret_error_never_shows_the_secret(
    fake_wecom: FakeWeComAPI, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    api = WeComAPI(
        corp_id=CORP_ID, secret="wrong-" + SECRET, agent_id=AGENT_ID, session=http, base_url=fake_wecom.base_url
    )
    with pytest.raises(WeComAPIError) as info:
        await api.send_text("alice", "hi")
    assert info.value.errcode == 40001
    assert SECRET not in str(info.value) and SECRET not in repr(api) and SECRET not in caplog.text
    # unreachable API: the aiohttp error (whose text would carry the URL and secret) is replaced
    dead = WeComAPI(corp_id=CORP_ID, secret=SECRET, agent_id=AGENT_ID, session=http, base_url="http://127.0.0.1:9")
    with pytest.raises(WeComAPIError) as info2:
        await dead.send_text("alice", "hi")
    assert SECRET not in str(info2.value) and info2.value.__cause__ is None


def test_split_text_on_utf8_boundaries() -> None:
    chinese = "人设一致的虚拟网红，今天在露台上拿着拿铁。" * 300  # 3 bytes a character
    pieces = text_pieces(chinese)
    assert len(pieces) > 1
    assert all(len(p.encode("utf-8")) <= 2048 for p in pieces)
    assert "".join(pieces) == chinese
    assert len(pieces[0].encode("utf-8")) >= 2046  # filled up to the last whole character
    emoji = "😀" * 1000  # 4 bytes each
    assert "".join(text_pieces(emoji)) == emoji
    assert all(len(p.encode()) <= 2048 for p in text_pieces(emoji))
    assert text_pieces("a" * 2048) == ["a" * 2048]
    assert text_pieces("a" * 2049) == ["a" * 2048, "a"]
    lines = "第一行内容\n" * 400
    assert all(p.endswith("\n") for p in text_pieces(lines))  # breaks after a newline when it can
    assert text_pieces("") == [""]


async def test_send_text_splits_at_2048_bytes(fake_wecom: FakeWeComAPI, http: aiohttp.ClientSession) -> None:
    api = make_api(fake_wecom, http)
    text = "通过重来撤销" * 500  # 9000 bytes
    assert await api.send_text("bob", text) == 5
    texts = fake_wecom.texts_to("bob")  # the fake refuses >2048 bytes with 45002
    assert "".join(texts) == text
    assert max(len(t.encode()) for t in texts) <= 2048


async def test_card_buttons_and_unique_task_ids(fake_wecom: FakeWeComAPI, http: aiohttp.ClientSession) -> None:
    api = make_api(fake_wecom, http)
    first = await api.send_card("alice", turn_id=7, title="结果", desc="mia · 露台")
    second = await api.send_card("alice", turn_id=7, title="结果")
    assert first != second
    cards = fake_wecom.messages_to("alice", "template_card")
    assert len(cards) == 2
    card = cards[0]["template_card"]
    assert cards[0]["agentid"] == AGENT_ID
    assert card["card_type"] == "button_interaction"
    assert card["task_id"] == first
    assert card["main_title"] == {"title": "结果", "desc": "mia · 露台"}
    assert [(b["text"], b["key"]) for b in card["button_list"]] == [
        ("通过", "approve:7"),
        ("重来", "regen:7"),
        ("撤销", "undo:7"),
    ]


async def test_upload_and_send_image_and_file(fake_wecom: FakeWeComAPI, http: aiohttp.ClientSession) -> None:
    api = make_api(fake_wecom, http)
    image_id = await api.upload_image(PNG, "a.png")
    await api.send_image("alice", image_id)
    file_id = await api.upload_media(b"PK\x03\x04zipdata", "export.zip", "file")
    await api.send_file("alice", file_id)
    assert fake_wecom.uploads[image_id].media_type == "image"
    assert fake_wecom.uploads[file_id].filename == "export.zip"
    assert [m["msgtype"] for m in fake_wecom.messages_to("alice")] == ["image", "file"]


def test_rate_limiter_sliding_window(clock: FakeClock) -> None:
    limiter = RateLimiter(30, 60.0, clock=clock, sleep=clock.sleep)
    for _ in range(30):
        assert limiter.try_acquire("alice")
        clock.now += 1
    assert not limiter.try_acquire("alice")
    assert limiter.try_acquire("bob")  # per user
    assert limiter.delay("alice") == pytest.approx(30.0)  # the first send leaves the window at t0+60
    clock.now += 30
    assert limiter.try_acquire("alice")
    assert not limiter.try_acquire("alice")


async def test_rate_limiter_waits_and_reserve(clock: FakeClock) -> None:
    limiter = RateLimiter(30, 60.0, clock=clock, sleep=clock.sleep)
    start = clock.now
    for _ in range(30):
        assert await limiter.acquire("alice") == 0
    waited = await limiter.acquire("alice")
    assert waited == pytest.approx(60.0)
    assert clock.now - start == pytest.approx(60.0)
    # optional sends keep a reserve for results
    limiter2 = RateLimiter(30, 60.0, clock=clock, sleep=clock.sleep)
    taken = sum(limiter2.try_acquire("carol", reserve=5) for _ in range(40))
    assert taken == 25 and sum(limiter2.try_acquire("carol") for _ in range(10)) == 5  # 5 remained


async def test_api_respects_the_limit_and_skips_optional(
    fake_wecom: FakeWeComAPI, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    api = make_api(fake_wecom, http, rate_limiter=RateLimiter(3, 60.0, clock=clock, sleep=clock.sleep))
    for i in range(3):
        await api.send_text("alice", f"m{i}")
    assert clock.sleeps == []
    assert await api.send_text("alice", "progress", optional=True) == 0  # skipped, not delayed
    await api.send_text("alice", "result")  # waits for the window
    assert clock.sleeps == [pytest.approx(60.0)]
    assert fake_wecom.texts_to("alice") == ["m0", "m1", "m2", "result"]


@pytest.mark.redis
async def test_token_shared_through_redis(
    fake_wecom: FakeWeComAPI, http: aiohttp.ClientSession, redis_url: str
) -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url)
    try:
        key = token_key(CORP_ID, AGENT_ID)
        first = make_api(fake_wecom, http, token_store=RedisTokenStore(client, key))
        second = make_api(fake_wecom, http, token_store=RedisTokenStore(client, key))  # "another process"
        await first.send_text("alice", "a")
        await second.send_text("alice", "b")
        assert fake_wecom.gettoken_calls == 1
        ttl = await client.ttl(key)
        assert 6800 <= ttl <= 6900  # expires_in minus the refresh margin
        fake_wecom.expire_token()
        await second.send_text("alice", "c")  # second refreshes; first picks the new token up
        await first.send_text("alice", "d")
        assert fake_wecom.gettoken_calls == 2
        assert fake_wecom.texts_to("alice") == ["a", "b", "c", "d"]
    finally:
        await client.aclose()
