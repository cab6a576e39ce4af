"""The WeCom front end as a process of its own, for kill -9 tests: the real conversation on the
database in DATABASE_URL (no redis, embedded queue, a no-op engine), the callback server on
WECOM_PORT, the send budget TEST_SENDS_PER_MINUTE per user. Prints READY once it listens.

``python -m tests.wecom.frontend_process`` (settings from the environment, as ``persona-studio run``).
"""

from __future__ import annotations

import asyncio
import os

from bot.app import build_app
from bot.frontend import freeze_start_up_heap
from bot.wecom import WeComConfig, WeComFrontEnd
from bot.wecom.outbox import inbox_owner
from bot.wecom.rate_limit import RateLimiter
from engine.jobs.noop_engine import NoopEngine
from storage.inbox import Inbox
from storage.settings import load_settings


async def main() -> None:
    settings = load_settings()
    app = await build_app(settings, engine=NoopEngine())
    limiter = RateLimiter(int(os.environ.get("TEST_SENDS_PER_MINUTE", "30")))
    inbox = Inbox(app.db, owner=inbox_owner(settings.wecom_port))
    front = WeComFrontEnd(WeComConfig.from_settings(settings), app.conversation, inbox=inbox, rate_limiter=limiter)
    await front.start()
    freeze_start_up_heap()  # as bot.frontend.serve does
    print("READY", flush=True)
    await front.wait_closed()


if __name__ == "__main__":
    asyncio.run(main())
