"""The blob store: what front ends, the commands layer and workers import.

Content-addressed images behind one interface (:class:`BlobStore`: put, put_image, get, path,
info, open_image, exists; and a few named, replaceable blobs — put_named, get_named,
delete_named — for training checkpoints) with two backends: a local folder (storage.local_blobs, the default)
and S3-compatible object storage (storage.s3_blobs, when BLOB_URL is set).
:func:`open_blob_store` picks the one the settings name; front ends and workers both call it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from storage.blob_config import BlobConfig
from storage.local_blobs import (
    DEFAULT_PNG_COMPRESS_LEVEL,
    BlobInfo,
    BlobNotFound,
    BlobStore,
    BlobStoreUnavailable,
    check_key,
    encode_png,
)

if TYPE_CHECKING:
    from storage.settings import Settings

__all__ = [
    "DEFAULT_PNG_COMPRESS_LEVEL",
    "BlobConfig",
    "BlobInfo",
    "BlobNotFound",
    "BlobStore",
    "BlobStoreUnavailable",
    "check_key",
    "encode_png",
    "open_blob_store",
]


def open_blob_store(settings: Settings | BlobConfig) -> BlobStore:
    """The blob store the settings name: S3 when BLOB_URL is set, else the folder BLOB_DIR.
    Every process opens its blobs here (front ends, web studio, workers, export, evaluation)."""
    config = settings if isinstance(settings, BlobConfig) else settings.blob_config()
    if config.url:
        from storage.s3_blobs import S3BlobStore

        return S3BlobStore.from_config(config)
    return BlobStore(config.folder)
