"""The WeCom front end's settings as one object, built from the environment's
:class:`storage.settings.Settings` (WECOM_*, and REDIS_URL for the shared access token) and
passed whole to the callback server. The required settings are checked here, once."""

from __future__ import annotations

from dataclasses import dataclass, field

from storage.settings import Settings, SettingsError

#: the settings a self-built app cannot work without, by environment name
REQUIRED = ("WECOM_CORP_ID", "WECOM_AGENT_ID", "WECOM_SECRET", "WECOM_TOKEN", "WECOM_AES_KEY")


@dataclass(frozen=True)
class WeComConfig:
    corp_id: str
    agent_id: int
    secret: str = field(repr=False)
    token: str = field(repr=False)
    aes_key: str = field(repr=False)
    api_base: str = "https://qyapi.weixin.qq.com"
    host: str = "0.0.0.0"
    port: int = 8080
    #: callbacks signed further from now than this are refused
    replay_window_s: float = 300.0
    #: the access token is shared through redis when set (else kept in this process)
    redis_url: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> WeComConfig:
        """The config, or :class:`SettingsError` naming the first missing required setting."""
        values = {
            "WECOM_CORP_ID": settings.wecom_corp_id,
            "WECOM_AGENT_ID": settings.wecom_agent_id,
            "WECOM_SECRET": settings.wecom_secret.get_secret_value() if settings.wecom_secret else None,
            "WECOM_TOKEN": settings.wecom_token.get_secret_value() if settings.wecom_token else None,
            "WECOM_AES_KEY": settings.wecom_aes_key.get_secret_value() if settings.wecom_aes_key else None,
        }
        missing = [name for name in REQUIRED if values[name] is None or values[name] == ""]
        if missing:
            raise SettingsError(f"setting {missing[0]}: the WeCom front end needs it (missing: {', '.join(missing)})")
        return cls(
            corp_id=str(values["WECOM_CORP_ID"]),
            agent_id=int(values["WECOM_AGENT_ID"]),  # type: ignore[arg-type]
            secret=str(values["WECOM_SECRET"]),
            token=str(values["WECOM_TOKEN"]),
            aes_key=str(values["WECOM_AES_KEY"]),
            api_base=settings.wecom_api_base,
            host=settings.wecom_host,
            port=settings.wecom_port,
            replay_window_s=float(settings.wecom_replay_window_s),
            redis_url=settings.redis_url,
        )
