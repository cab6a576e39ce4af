"""Each front end's settings as one object built from the environment's Settings: the WeCom
required settings checked once, secrets never in a config's repr, the blob store's settings whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.discord import DiscordConfig
from bot.serve import check_front_end_settings
from bot.web import WebConfig
from bot.wecom import WeComConfig
from storage.settings import SettingsError, load_settings
from tests.wecom.harness import AES_KEY, AGENT_ID, CORP_ID, SECRET, TOKEN


def test_wecom_required_settings_are_checked_in_one_place() -> None:
    half = load_settings(wecom_corp_id=CORP_ID, wecom_secret=SECRET)
    message = (
        "setting WECOM_AGENT_ID: the WeCom front end needs it (missing: WECOM_AGENT_ID, WECOM_TOKEN, WECOM_AES_KEY)"
    )
    with pytest.raises(SettingsError) as from_config:
        WeComConfig.from_settings(half)
    with pytest.raises(SettingsError) as from_run:
        check_front_end_settings(half)
    assert str(from_config.value) == str(from_run.value) == message

    full = load_settings(
        wecom_corp_id=CORP_ID, wecom_agent_id=AGENT_ID, wecom_secret=SECRET, wecom_token=TOKEN, wecom_aes_key=AES_KEY
    )
    config = WeComConfig.from_settings(full)
    assert (config.corp_id, config.agent_id, config.secret, config.aes_key) == (CORP_ID, AGENT_ID, SECRET, AES_KEY)
    assert SECRET not in repr(config) and TOKEN not in repr(config) and AES_KEY not in repr(config)
    assert check_front_end_settings(full) == ["wecom"]


def test_discord_web_and_blob_configs_carry_their_settings_and_hide_secrets(tmp_path: Path) -> None:
    settings = load_settings(
        discord_token="discord-token-value",
        discord_guild_ids="1, 2",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'a.db'}",
        web_port=9123,
        web_secret="w" * 20,
        admin_ids="discord:7",
        blob_url="s3://bucket/some/prefix",
        aws_secret_access_key="aws-secret-value",
        blob_cache_mb=64,
    )
    discord = DiscordConfig.from_settings(settings)
    assert discord.guild_ids == (1, 2) and discord.require_token() == "discord-token-value"
    assert "discord-token-value" not in repr(discord)
    with pytest.raises(SettingsError, match=r"^setting DISCORD_TOKEN:"):
        DiscordConfig().require_token()

    web = WebConfig.from_settings(settings)
    assert (web.port, web.public_url, web.admin_ids) == (9123, "http://127.0.0.1:9123", ("discord:7",))
    assert web.thumbs_dir == tmp_path / "thumbs" and "w" * 20 not in repr(web)

    blobs = settings.blob_config()
    assert blobs.bucket_and_prefix == ("bucket", "some/prefix/") and blobs.cache_bytes == 64 * 2**20
    assert blobs.s3.secret_access_key == "aws-secret-value" and "aws-secret-value" not in repr(blobs)
