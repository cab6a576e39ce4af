"""The web studio's settings as one object, built from the environment's
:class:`storage.settings.Settings` (WEB_*, ADMIN_IDS, REDIS_URL, the data folder) and passed whole
to :func:`bot.web.server.make_state` and :class:`bot.web.server.WebFrontEnd`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from storage.settings import Settings, web_secret


@dataclass(frozen=True)
class WebConfig:
    #: signs and verifies studio links: WEB_SECRET, or the installation's kept one
    secret: str = field(repr=False)
    host: str = "127.0.0.1"
    port: int = 8090
    #: links start with it (WEB_PUBLIC_URL, else http://HOST:PORT)
    public_url: str = "http://127.0.0.1:8090"
    link_hours: float = 24.0
    admin_ids: tuple[str, ...] = ()
    #: readiness, worker metrics and the queue's state; None: in-process queue
    redis_url: str | None = None
    #: where thumbnails are kept (under the installation's data folder)
    thumbs_dir: Path = Path("./data/thumbs")

    @classmethod
    def from_settings(cls, settings: Settings) -> WebConfig:
        return cls(
            secret=web_secret(settings),
            host=settings.web_host,
            port=settings.web_port,
            public_url=settings.effective_web_public_url,
            link_hours=settings.web_link_hours,
            admin_ids=tuple(settings.admin_ids),
            redis_url=settings.redis_url,
            thumbs_dir=settings.data_dir / "thumbs",
        )

    @property
    def link_max_age_s(self) -> float:
        return self.link_hours * 3600
