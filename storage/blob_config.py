"""The blob store's settings as one object: where blobs live (a folder, or a bucket with a local
cache) and how to reach the bucket.

:meth:`storage.settings.Settings.blob_config` builds it from BLOB_DIR, BLOB_URL, BLOB_CACHE_MB,
BLOB_S3_ADDRESSING_STYLE and the AWS_* variables; :func:`storage.blobs.open_blob_store` opens the
store it names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

AddressingStyle = Literal["auto", "path", "virtual"]


def parse_blob_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix/")`` (prefix "" when none)."""
    if not url.startswith("s3://"):
        raise ValueError("expected s3://bucket or s3://bucket/prefix")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError("expected s3://bucket or s3://bucket/prefix")
    prefix = prefix.strip("/")
    return bucket, (prefix + "/" if prefix else "")


@dataclass(frozen=True)
class S3Access:
    """How to reach the bucket; unset values fall back to boto3's own lookup (~/.aws, IAM role)."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)  # never in logs
    addressing_style: AddressingStyle = "auto"


@dataclass(frozen=True)
class BlobConfig:
    """A folder of blobs (``url`` None), or the bucket ``url`` with ``folder`` as its bounded cache."""

    folder: Path
    url: str | None = None
    cache_bytes: int = 4096 * 2**20
    s3: S3Access = S3Access()

    @property
    def bucket_and_prefix(self) -> tuple[str, str]:
        if self.url is None:
            raise ValueError("blobs live in a folder, not a bucket (BLOB_URL is unset)")
        return parse_blob_url(self.url)
