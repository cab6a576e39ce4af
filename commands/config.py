"""The conversation's configuration: which engine model, admins, per-user limits, web links."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


def is_admin(admin_ids: tuple[str, ...], platform: str, user_id: str) -> bool:
    """The one admin rule (chat and web): ``ADMIN_IDS`` lists a bare user id or ``platform:user id``."""
    return user_id in admin_ids or f"{platform}:{user_id}" in admin_ids


@dataclass(frozen=True)
class ConversationConfig:
    engine_model: str = "tiny"
    #: ENGINE_VIDEO_MODEL: its defaults (fps, steps, size) go into /video's jobs
    video_model: str = "tiny"
    lora_dir: Path = Path("./data/loras")
    admin_ids: tuple[str, ...] = ()
    max_running_jobs: int = 2
    max_waiting_jobs: int = 8
    #: a /persona train may ask for at most this many images × steps (MAX_TRAIN_WORK)
    max_train_work: int = 64_000
    #: may users create personas from a photo of a real person (ALLOW_PHOTO_PERSONAS)
    allow_photo_personas: bool = True
    #: platforms whose posts live in platform threads: jobs start once the thread is bound
    threaded_platforms: frozenset[str] = frozenset({"discord"})
    #: /gallery links: signed with web_secret, starting with web_public_url (unset: no web studio)
    web_public_url: str = ""
    web_secret: str = ""
    web_link_hours: float = 24.0

    def is_admin(self, platform: str, user_id: str) -> bool:
        return is_admin(self.admin_ids, platform, user_id)
