"""The Discord front end's settings as one object, built from the environment's
:class:`storage.settings.Settings` (DISCORD_TOKEN, DISCORD_GUILD_IDS, DISCORD_API_BASE,
DISCORD_AUTO_ARCHIVE_MINUTES) and passed whole to the client and its renderer."""

from __future__ import annotations

from dataclasses import dataclass, field

from storage.settings import Settings, SettingsError


@dataclass(frozen=True)
class DiscordConfig:
    token: str | None = field(default=None, repr=False)
    #: guilds to sync the slash commands to at once; empty: global commands
    guild_ids: tuple[int, ...] = ()
    #: REST base URL override (tests)
    api_base: str | None = None
    auto_archive_minutes: int = 1440

    @classmethod
    def from_settings(cls, settings: Settings) -> DiscordConfig:
        token = settings.discord_token
        return cls(
            token=token.get_secret_value() if token is not None else None,
            guild_ids=tuple(settings.discord_guild_ids),
            api_base=settings.discord_api_base,
            auto_archive_minutes=settings.discord_auto_archive_minutes,
        )

    def require_token(self) -> str:
        if not self.token:
            raise SettingsError(
                "setting DISCORD_TOKEN: the bot token from the Developer Portal (Bot > Token) is needed"
            )
        return self.token
