"""Benchmark the WeCom callback's answer time with N callbacks in flight, the inbox write included.

    python bench/wecom_callbacks.py                                # SQLite, 2000 callbacks, 50 in flight
    python bench/wecom_callbacks.py --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/bench

The front end runs as its own process (``tests.wecom.frontend_process``: the real conversation,
a no-op engine, no redis), as in production; this process plays WeCom: it seals callbacks with
real crypto, POSTs them with ``--in-flight`` at a time and serves the WeCom API the replies go to.
Every callback is ``/help`` from one of 50 users, so the background work (user lookup, reply
sent through the API) competes with the answers, as it does in use.

Where the time goes, measured apart in this process:

* ``open``: signature check, AES decryption and both XML parses of one callback (no I/O);
* ``inbox``: one ``Inbox.accept`` with ``--in-flight`` of them at once on the same kind of
  database (accepts are group-committed: those waiting share one INSERT ... ON CONFLICT DO
  NOTHING and one transaction).
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/queue.py must not shadow the standard library's ``queue``: drop this folder from the path
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from typing import Any  # noqa: E402

import aiohttp  # noqa: E402

from bot.wecom.crypto import WeComCrypto  # noqa: E402
from bot.wecom.envelope import open_envelope  # noqa: E402
from storage.db import Database  # noqa: E402
from storage.inbox import Inbox  # noqa: E402
from tests.fakes.wecom_api import FakeWeComAPI  # noqa: E402
from tests.services import free_port  # noqa: E402
from tests.wecom.harness import AES_KEY, AGENT_ID, CORP_ID, SECRET, TOKEN, text_xml  # noqa: E402

USERS = 50


def seal(crypto: WeComCrypto, message_xml: str, nonce: str) -> tuple[dict[str, str], bytes]:
    timestamp = str(int(time.time()))
    encrypted = crypto.encrypt(message_xml)
    params = {"msg_signature": crypto.sign(timestamp, nonce, encrypted), "timestamp": timestamp, "nonce": nonce}
    body = f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"
    return params, body.encode()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(values_s: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values_s]
    return {"p50_ms": round(statistics.median(ms), 2), "p99_ms": round(pct(ms, 0.99), 2), "max_ms": round(max(ms), 2)}


async def measure_answers(args: argparse.Namespace, database_url: str, folder: Path) -> dict[str, Any]:
    crypto = WeComCrypto(TOKEN, AES_KEY, CORP_ID)
    port = free_port()
    async with FakeWeComAPI(CORP_ID, SECRET, AGENT_ID) as fake:
        env = {
            **{k: v for k, v in os.environ.items() if k != "REDIS_URL"},
            "PYTHONPATH": str(_BENCH.parent),
            "DATABASE_URL": database_url,
            "BLOB_DIR": str(folder / "blobs"),
            "LORA_DIR": str(folder / "loras"),
            "WECOM_CORP_ID": CORP_ID,
            "WECOM_AGENT_ID": str(AGENT_ID),
            "WECOM_SECRET": SECRET,
            "WECOM_TOKEN": TOKEN,
            "WECOM_AES_KEY": AES_KEY,
            "WECOM_API_BASE": fake.base_url,
            "WECOM_HOST": "127.0.0.1",
            "WECOM_PORT": str(port),
            "TEST_SENDS_PER_MINUTE": "1000000",
        }
        server = subprocess.Popen(  # noqa: ASYNC220 (started once, before the measurement)
            [sys.executable, "-m", "tests.wecom.frontend_process"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert server.stdout is not None
            line = await asyncio.to_thread(server.stdout.readline)
            if line.strip() != "READY":
                raise RuntimeError("the front end did not start")
            sealed = [
                seal(crypto, text_xml(f"user{i % USERS}", "/help", agent_id=AGENT_ID), f"n{i}")
                for i in range(args.callbacks + args.warmup)
            ]
            url = f"http://127.0.0.1:{port}/wecom/callback"
            # this process plays WeCom: its own full garbage collections (its heap holds every sealed
            # callback) stalled it 74-79 ms mid-burst, counted as the front end's answer time; its
            # heap is frozen as the front end's is (bot.frontend.freeze_start_up_heap)
            gc.collect()
            gc.freeze()
            idle: list[float] = []  # one at a time, each answered (its reply sent) before the next
            async with aiohttp.ClientSession() as http:
                for i in range(args.idle):
                    params, body = seal(crypto, text_xml(f"idle{i}", "/help", agent_id=AGENT_ID), f"i{i}")
                    sent = len(fake.sent)
                    start = time.perf_counter()
                    async with http.post(url, params=params, data=body) as response:
                        await response.read()
                    idle.append(time.perf_counter() - start)
                    await fake.wait_for(lambda f, n=sent: len(f.sent) > n, within_s=30)
            gate = asyncio.Semaphore(args.in_flight)
            times: list[float] = []
            connector = aiohttp.TCPConnector(limit=args.in_flight)
            async with aiohttp.ClientSession(connector=connector) as http:

                async def one(index: int, params: dict[str, str], body: bytes) -> None:
                    async with gate:
                        start = time.perf_counter()
                        async with http.post(url, params=params, data=body) as response:
                            await response.read()
                            assert response.status == 200, response.status
                        if index >= args.warmup:
                            times.append(time.perf_counter() - start)

                await asyncio.gather(*(one(i, p, b) for i, (p, b) in enumerate(sealed)))
            burst_sent = time.perf_counter()
            await fake.wait_for(lambda f: len(f.sent) >= len(sealed) + args.idle, within_s=300)
            replies_after_s = time.perf_counter() - burst_sent
        finally:
            server.terminate()
            server.wait(timeout=30)
    return {
        **summary(times),
        "idle": summary(idle[5:] or idle),
        "p99_vs_idle_p99": round(pct(times, 0.99) / max(pct(idle[5:] or idle, 0.99), 1e-9), 1),
        "replies_done_s_after_last_answer": round(replies_after_s, 2),
    }


async def measure_parts(args: argparse.Namespace, database_url: str) -> dict[str, dict[str, float]]:
    crypto = WeComCrypto(TOKEN, AES_KEY, CORP_ID)
    sealed = [seal(crypto, text_xml(f"user{i % USERS}", "/help"), f"p{i}") for i in range(500)]
    opened: list[float] = []
    for params, body in sealed:
        start = time.perf_counter()
        open_envelope(crypto, CORP_ID, body, params["msg_signature"], params["timestamp"], params["nonce"])
        opened.append(time.perf_counter() - start)
    db = Database(database_url)
    await db.upgrade()
    inbox = Inbox(db)
    gate = asyncio.Semaphore(args.in_flight)
    accepted: list[float] = []

    async def accept(index: int) -> None:
        async with gate:
            start = time.perf_counter()
            await inbox.accept("bench", f"msg:{uuid.uuid4().hex}", {"Content": "/help", "n": str(index)})
            accepted.append(time.perf_counter() - start)

    await asyncio.gather(*(accept(i) for i in range(args.callbacks)))
    await db.dispose()
    return {"open": summary(opened), "inbox": summary(accepted)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--callbacks", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--in-flight", type=int, default=50)
    parser.add_argument("--idle", type=int, default=60, help="callbacks sent one at a time first (idle answer time)")
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temporary folder")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-wecom-") as tmp:
        folder = Path(tmp)
        url = args.database_url or f"sqlite+aiosqlite:///{folder / 'app.db'}"
        parts_url = args.database_url or f"sqlite+aiosqlite:///{folder / 'parts.db'}"
        answers = await measure_answers(args, url, folder)
        parts = await measure_parts(args, parts_url)
    result = {"database": url.split(":")[0], "in_flight": args.in_flight, "answer": answers, **parts}
    if args.json:
        print(json.dumps(result))
        return
    print(f"{'what':<8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}   ({result['database']}, {args.in_flight} in flight)")
    for name in ("answer", "open", "inbox"):
        row = result[name]
        print(f"{name:<8} {row['p50_ms']:>8} {row['p99_ms']:>8} {row['max_ms']:>8}")


if __name__ == "__main__":
    asyncio.run(main())
