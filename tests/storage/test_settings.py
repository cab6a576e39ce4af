"""Settings: defaults, environment and .env, one clear line per bad value, masked secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.settings import SettingsError, load_settings


def test_defaults_are_the_embedded_offline_setup() -> None:
    settings = load_settings()
    assert settings.database_url.startswith("sqlite+aiosqlite:///")
    assert settings.redis_url is None
    assert settings.engine_model == "tiny"
    assert settings.face_backend == "dlib"
    assert settings.max_running_jobs == 2 and settings.max_waiting_jobs == 8
    assert 0 < settings.effective_identity_threshold < 1


def test_environment_and_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("ENGINE_MODEL=/models/kontext\nDISCORD_GUILD_IDS=1, 2\n")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6390/1")
    monkeypatch.setenv("ADMIN_IDS", "discord:1,wecom:zhang")
    settings = load_settings()
    assert settings.engine_model == "/models/kontext"
    assert settings.discord_guild_ids == [1, 2]
    assert settings.redis_url == "redis://127.0.0.1:6390/1"
    assert settings.admin_ids == ["discord:1", "wecom:zhang"]


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("WECOM_PORT", "eighty", "setting WECOM_PORT:"),
        ("DATABASE_URL", "mysql://x/y", "setting DATABASE_URL: expected sqlite+aiosqlite"),
        ("REDIS_URL", "localhost:6379", "setting REDIS_URL: expected redis://"),
        ("FACE_BACKEND", "opencv", "setting FACE_BACKEND:"),
        ("IDENTITY_THRESHOLD", "1.5", "setting IDENTITY_THRESHOLD:"),
        ("DISCORD_GUILD_IDS", "12,abc", "setting DISCORD_GUILD_IDS:"),
        ("WECOM_AES_KEY", "short", "setting WECOM_AES_KEY: expected the 43-character"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith(expected), message
    assert "\n" not in message
    if name == "WECOM_AES_KEY":
        assert value not in message  # secrets are never echoed


def test_masked_hides_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", "MTIz.secret-token-value-xy")
    monkeypatch.setenv("WECOM_SECRET", "corp-secret-abcdef")
    shown = load_settings().masked()
    assert shown["DISCORD_TOKEN"] == "****xy"
    assert "secret" not in shown["WECOM_SECRET"]
    assert shown["REDIS_URL"] == "(unset)"


def test_env_example_lists_every_setting_and_loads_as_is(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / ".env.example"
    names = {line.split("=", 1)[0] for line in example.read_text().splitlines() if line and not line.startswith("#")}
    from storage.settings import Settings

    assert names == {name.upper() for name in Settings.model_fields}
    (tmp_path / ".env").write_text(example.read_text())
    settings = load_settings()  # empty values mean "unset", not "empty string"
    assert settings.redis_url is None and settings.discord_token is None and settings.face_model_dir is None
    assert settings.identity_threshold is None and not settings.discord_enabled and not settings.wecom_enabled


def test_passwords_in_urls_are_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://app:s3cr3t-pw@db.internal:5432/studio")
    monkeypatch.setenv("REDIS_URL", "redis://:r3dis-pw@cache:6379/0")
    shown = load_settings().masked()
    assert shown["DATABASE_URL"] == "postgresql+asyncpg://app:***@db.internal:5432/studio"
    assert shown["REDIS_URL"] == "redis://:***@cache:6379/0"
    monkeypatch.setenv("REDIS_URL", "http://user:leak-pw@cache")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "leak-pw" not in str(info.value) and "user:***@cache" in str(info.value)


def test_engine_threads_default_to_a_share_of_the_cores(monkeypatch) -> None:
    import os

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert load_settings().effective_engine_threads == 8
    assert load_settings(workers_per_host=2).effective_engine_threads == 4
    assert load_settings(workers_per_host=16).effective_engine_threads == 1  # never 0
    assert load_settings(workers_per_host=2, engine_threads=3).effective_engine_threads == 3
    monkeypatch.setenv("ENGINE_THREADS", "0")
    with pytest.raises(SettingsError, match="ENGINE_THREADS"):
        load_settings()
