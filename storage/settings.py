"""Settings from the environment and ``.env``.

Settings live in storage/ because it is the one layer every other layer may import. A bad value
stops start-up with :class:`SettingsError`, whose message is one line naming the setting and
what it expects.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from storage.blob_config import BlobConfig, S3Access, parse_blob_url

#: Default identity threshold per face backend, on the 0-1 similarity scale of engine.render.identity.
DEFAULT_IDENTITY_THRESHOLDS = {"dlib": 0.55, "insightface": 0.35}


#: the job queues (engine.jobs.queues): a worker serves some or all (WORKER_QUEUES)
WORKER_QUEUE_NAMES = ("images", "video", "training")


class SettingsError(ValueError):
    """A setting has a bad value; the message is one line meant for the person starting the app."""


def _split_ints(value: object) -> object:
    if isinstance(value, str):
        return [int(part) for part in value.replace(",", " ").split()] if value.strip() else []
    return value


def _split_strs(value: object) -> object:
    if isinstance(value, str):
        return [part for part in value.replace(",", " ").split() if part]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False, env_ignore_empty=True
    )

    # storage
    database_url: str = Field(
        default="sqlite+aiosqlite:///./data/persona-studio.db",
        description="SQLAlchemy async URL: sqlite+aiosqlite:///path or postgresql+asyncpg://...",
    )
    blob_dir: Path = Field(
        default=Path("./data/blobs"), description="folder of the image blob store (with BLOB_URL: its local cache)"
    )
    blob_url: str | None = Field(default=None, description="s3://bucket/prefix; unset = blobs live in BLOB_DIR")
    blob_cache_mb: int = Field(default=4096, ge=16, description="bound of the local cache of an S3 blob store")
    blob_s3_addressing_style: Literal["auto", "path", "virtual"] = "auto"
    # S3 access: the standard AWS variables (unset ones fall back to boto3's own lookup: ~/.aws, IAM role)
    aws_endpoint_url: str | None = Field(default=None, description="https://... of a non-AWS store (MinIO, R2, OSS)")
    aws_region: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: SecretStr | None = None
    # queue
    redis_url: str | None = Field(default=None, description="redis://host:port/db; unset = in-process queue")
    worker_queues: str = Field(
        default="images,video,training",
        description="queues a `persona-studio worker` takes jobs from (comma-separated: images, video, training)",
    )
    # engine
    engine_model: str = Field(default="tiny", description="'tiny', a hub id or a local pipeline folder")
    engine_device: str | None = Field(default=None, description="cpu, cuda, cuda:1; unset = auto")
    engine_dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    engine_cpu_offload: bool = False
    engine_train_model: str | None = Field(
        default=None, description="klein: the Base model persona LoRAs train on; unset = ENGINE_MODEL"
    )
    engine_seg_model: str = Field(
        default="",
        description="region edits' detector and SAM: 'tiny' or '<detector>,<sam>' (hub ids or folders); "
        "unset = tiny with a tiny ENGINE_MODEL, else OWLv2 base + SAM-HQ vit-base",
    )
    engine_video_model: str = Field(
        default="tiny", description="/video: 'tiny', a Wan image-to-video hub id or a local folder"
    )
    engine_video_cpu_offload: bool = Field(
        default=False, description="video model CPU offload: each part on the GPU only while it runs"
    )
    video_upload_mb: float = Field(
        default=8.0, gt=0, le=500, description="clips larger than this also get a lower-bitrate copy for chat uploads"
    )
    lora_dir: Path = Field(default=Path("./data/loras"), description="<archetype>/<name>.safetensors")
    face_backend: Literal["dlib", "insightface"] = "dlib"
    face_model_dir: Path | None = Field(default=None, description="insightface model pack folder")
    identity_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    engine_threads: int | None = Field(
        default=None, ge=1, le=1024, description="torch threads of one worker; unset = cores / WORKERS_PER_HOST"
    )
    workers_per_host: int = Field(default=1, ge=1, le=1024, description="worker processes sharing this host")
    png_compress_level: int = Field(
        default=1, ge=0, le=9, description="zlib level of stored result PNGs (lossless at every level)"
    )
    engine_compile: Literal["none", "regional", "full"] = Field(
        default="none", description="torch.compile the transformer: its repeated blocks (regional) or whole (full)"
    )
    engine_attention: str | None = Field(
        default=None, description="diffusers attention backend (native, _native_flash, flash, _flash_3); unset = native"
    )
    engine_fuse_qkv: bool = Field(default=False, description="fuse Q/K/V projections (only with no LoRA on them)")
    engine_max_batch: int = Field(default=4, ge=1, le=16, description="images of one post rendered as one batch")
    engine_persona_slot: bool = Field(
        default=True, description="persona blends as one hot-swapped LoRA (no recompile); false = set_adapters"
    )
    engine_persona_rank: int = Field(default=0, ge=0, le=1024, description="persona slot rank; 0 = auto")
    previews: bool = Field(default=True, description="live previews of a running turn (on/off)")
    preview_min_interval_s: float = Field(
        default=2.0, ge=0.0, le=3600.0, description="seconds between two previews of one job, at least"
    )
    # conversation rules
    admin_ids: Annotated[list[str], NoDecode] = Field(default_factory=list)
    max_running_jobs: int = Field(default=2, ge=1, le=100)
    max_waiting_jobs: int = Field(default=8, ge=0, le=1000)
    max_train_work: int = Field(default=64_000, ge=1, description="/persona train: at most images × steps")
    allow_photo_personas: bool = Field(default=True, description="may users create personas from a photo")
    # discord
    discord_token: SecretStr | None = None
    discord_guild_ids: Annotated[list[int], NoDecode] = Field(default_factory=list)
    discord_api_base: str | None = Field(default=None, description="REST base URL override (tests)")
    discord_auto_archive_minutes: int = 1440
    # wecom
    wecom_corp_id: str | None = None
    wecom_agent_id: int | None = None
    wecom_secret: SecretStr | None = None
    wecom_token: SecretStr | None = None
    wecom_aes_key: SecretStr | None = None
    wecom_api_base: str = "https://qyapi.weixin.qq.com"
    wecom_host: str = "0.0.0.0"
    wecom_port: int = Field(default=8080, ge=1, le=65535)
    wecom_replay_window_s: int = Field(
        default=300, ge=10, le=86400, description="callbacks signed further from now than this are refused"
    )
    # web studio (bot/web): pages behind signed links, /healthz /readyz /metrics
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=8090, ge=1, le=65535)
    web_public_url: str | None = Field(default=None, description="links start with it; unset = http://HOST:PORT")
    web_secret: SecretStr | None = Field(default=None, description="signs links; unset = generated, kept in the data")
    web_link_hours: float = Field(default=24.0, gt=0, le=24 * 90, description="how long a /gallery link works")

    @field_validator("discord_guild_ids", mode="before")
    @classmethod
    def _guild_ids(cls, value: object) -> object:
        return _split_ints(value)

    @field_validator("admin_ids", mode="before")
    @classmethod
    def _admins(cls, value: object) -> object:
        return _split_strs(value)

    @field_validator("discord_auto_archive_minutes")
    @classmethod
    def _archive(cls, value: int) -> int:
        if value not in (60, 1440, 4320, 10080):
            raise ValueError("expected 60, 1440, 4320 or 10080 (minutes, as Discord allows)")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("expected sqlite+aiosqlite:///<path> or postgresql+asyncpg://user@host/db")
        return value

    @field_validator("worker_queues")
    @classmethod
    def _worker_queues(cls, value: str) -> str:
        names = [name.strip().lower() for name in value.split(",") if name.strip()]
        unknown = [name for name in names if name not in WORKER_QUEUE_NAMES]
        if not names or unknown:
            raise ValueError(f"WORKER_QUEUES takes a comma-separated list of {', '.join(WORKER_QUEUE_NAMES)}")
        return ",".join(dict.fromkeys(names))

    @property
    def worker_queue_list(self) -> tuple[str, ...]:
        """WORKER_QUEUES as a tuple, in the order given."""
        return tuple(self.worker_queues.split(","))

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            return None
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("expected redis://host:port/db (or leave unset for the in-process queue)")
        return value

    @field_validator("web_public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("expected an http:// or https:// URL, e.g. https://studio.example.com")
        return value.rstrip("/") if value else None

    @field_validator("web_secret")
    @classmethod
    def _web_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("expected at least 16 characters (or leave unset: one is generated)")
        return value

    @field_validator("blob_url")
    @classmethod
    def _blob_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parse_blob_url(value)  # raises with the expected form
        return value

    @field_validator("aws_endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("expected http(s)://host[:port] of the S3-compatible endpoint")
        return value

    @field_validator("wecom_aes_key")
    @classmethod
    def _aes_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) != 43:
            raise ValueError("expected the 43-character EncodingAESKey from the WeCom admin console")
        return value

    @property
    def effective_identity_threshold(self) -> float:
        if self.identity_threshold is not None:
            return self.identity_threshold
        return DEFAULT_IDENTITY_THRESHOLDS[self.face_backend]

    @property
    def effective_engine_threads(self) -> int:
        """ENGINE_THREADS, or this host's cores shared out among WORKERS_PER_HOST workers (>= 1)."""
        if self.engine_threads is not None:
            return self.engine_threads
        return max(1, (os.cpu_count() or 1) // self.workers_per_host)

    @property
    def wecom_enabled(self) -> bool:
        return bool(self.wecom_corp_id)

    @property
    def discord_enabled(self) -> bool:
        return self.discord_token is not None

    @property
    def effective_web_public_url(self) -> str:
        return self.web_public_url or f"http://{self.web_host}:{self.web_port}"

    @property
    def data_dir(self) -> Path:
        """Where the installation keeps its data: the SQLite database's folder, else BLOB_DIR's parent."""
        url = make_url(self.database_url)
        if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
            return Path(url.database).expanduser().parent
        return Path(self.blob_dir).expanduser().parent

    def blob_config(self) -> BlobConfig:
        """The blob store's settings (storage.blob_config), passed whole to open_blob_store."""
        secret = self.aws_secret_access_key
        return BlobConfig(
            folder=Path(self.blob_dir),
            url=self.blob_url,
            cache_bytes=self.blob_cache_mb * 2**20,
            s3=S3Access(
                endpoint_url=self.aws_endpoint_url,
                region=self.aws_region,
                access_key_id=self.aws_access_key_id,
                secret_access_key=secret.get_secret_value() if secret is not None else None,
                addressing_style=self.blob_s3_addressing_style,
            ),
        )

    def masked(self) -> dict[str, str]:
        """Every setting as ENV_NAME -> text, secrets shown as ``****`` plus their last 2 chars."""
        out: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                secret = value.get_secret_value()
                text = "****" + secret[-2:] if len(secret) > 8 else "****"
            elif value is None:
                text = "(unset)"
            elif name.endswith("_url") and isinstance(value, str):
                text = hide_password(value)
            elif isinstance(value, list):
                text = ",".join(str(v) for v in value) or "(none)"
            else:
                text = str(value)
            out[name.upper()] = text
        out["IDENTITY_THRESHOLD (effective)"] = f"{self.effective_identity_threshold:.2f}"
        out["ENGINE_THREADS (effective)"] = str(self.effective_engine_threads)
        return out


def load_settings(**overrides: object) -> Settings:
    """Read settings; raise :class:`SettingsError` with one clear line on a bad value."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]).upper() if first.get("loc") else "settings"
        message = first.get("msg", "invalid value").removeprefix("Value error, ")
        raw = first.get("input")
        if isinstance(raw, str) and name.endswith("_URL"):
            raw = hide_password(raw)
        shown = "" if name in _SECRET_NAMES or isinstance(raw, dict) else f" (got {raw!r})"
        raise SettingsError(f"setting {name}: {message}{shown}") from None


_SECRET_NAMES = {"DISCORD_TOKEN", "WECOM_SECRET", "WECOM_TOKEN", "WECOM_AES_KEY", "WEB_SECRET", "AWS_SECRET_ACCESS_KEY"}
WEB_SECRET_FILE = "web-secret"


def web_secret(settings: Settings) -> str:
    """WEB_SECRET, or the installation's generated one: made once (32 random bytes, hex) in the
    data folder (:attr:`Settings.data_dir`) and read from there by every later process, so all
    processes of one installation accept the same links. Creating it is atomic: two processes
    starting at once agree on one secret."""
    if settings.web_secret is not None:
        return settings.web_secret.get_secret_value()
    target = settings.data_dir / WEB_SECRET_FILE
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{WEB_SECRET_FILE}-{secrets.token_hex(6)}")
        tmp.write_text(secrets.token_hex(32) + "\n")
        tmp.chmod(0o600)
        try:
            os.link(tmp, target)  # fails if another process made it first: theirs wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    secret = target.read_text().strip()
    if len(secret) < 16:
        raise SettingsError(f"setting WEB_SECRET: the kept secret in {target} is damaged; delete the file")
    return secret


def hide_password(url: str) -> str:
    """``scheme://user:secret@host/db`` -> ``scheme://user:***@host/db`` (other URLs unchanged)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:  # not a URL at all: nothing to hide in it
        return url
