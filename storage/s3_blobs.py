"""The blob store on S3-compatible object storage (AWS S3, MinIO, Cloudflare R2, Aliyun OSS...).

Objects are ``<prefix>/<sha256>`` with ``Content-Type`` = the mime type and user metadata
``width``/``height``; the object's length is the size. A write is a conditional PUT
(``If-None-Match: *``): the store refuses to replace an existing key atomically, with no window
between a check and the write. A store that answers 412/409 to it already holds the key (same
bytes: keys are content hashes). A store that does not implement conditional writes (501) gets a
HEAD check before each PUT instead.

``path(key)`` downloads into a local cache folder (BLOB_DIR) laid out like the local backend, so
everything that reads blobs as files works unchanged. The cache is bounded (BLOB_CACHE_MB): when
it grows past the bound the least recently used files go, except those used in the last
:data:`KEEP_RECENT_S` seconds (a caller may still be reading a path it was just given).

Client: boto3 (sync). The store's interface is synchronous and is called from the engine's
render thread and the commands layer; boto3's client is thread-safe, is the reference client
every S3-compatible vendor documents, and moto (the tests' S3 endpoint) depends on it anyway.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from storage.blob_config import BlobConfig, S3Access
from storage.local_blobs import BlobInfo, BlobNotFound, BlobStore, BlobStoreUnavailable, check_key, check_name

log = logging.getLogger(__name__)

#: cached files used this recently are never evicted
KEEP_RECENT_S = 60.0
#: eviction brings the cache down to this share of its bound
EVICT_TO = 0.8


def make_s3_client(access: S3Access, config: Any = None) -> Any:
    """A boto3 S3 client (unset values fall back to boto3's own lookup); ``config`` (a botocore
    Config) is merged over the defaults."""
    import boto3
    from botocore.config import Config

    base = Config(
        s3={"addressing_style": access.addressing_style},
        retries={"max_attempts": 5, "mode": "standard"},
        max_pool_connections=16,
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=access.endpoint_url,
        region_name=access.region,
        aws_access_key_id=access.access_key_id,
        aws_secret_access_key=access.secret_access_key,
        config=base.merge(config) if config is not None else base,
    )


class S3BlobStore(BlobStore):
    """:class:`BlobStore` on a bucket, with a bounded local cache under ``cache_dir``."""

    def __init__(
        self, cache_dir: str | os.PathLike[str], client: Any, bucket: str, prefix: str = "", cache_bytes: int = 2**32
    ) -> None:
        super().__init__(cache_dir)
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.cache_bytes = cache_bytes
        self._conditional_put = True  # off once the store answers 501 to If-None-Match
        self._lock = threading.Lock()
        self._cached: int | None = None  # bytes in the cache, counted on first need

    @classmethod
    def from_config(cls, config: BlobConfig) -> S3BlobStore:
        bucket, prefix = config.bucket_and_prefix
        store = cls(config.folder, make_s3_client(config.s3), bucket, prefix, config.cache_bytes)
        store.access = config.s3
        return store

    #: how the store was configured (a quick client for :meth:`check` is made from it)
    access: S3Access | None = None

    def check(self, timeout_s: float = 3.0) -> str:
        """HEAD the bucket with a short timeout and no retries (start-up and /readyz): raise
        :class:`BlobStoreUnavailable` naming the endpoint and bucket when it does not answer."""
        from botocore.exceptions import BotoCoreError, ClientError

        client = self._check_client(timeout_s)
        where = f"bucket {self.bucket!r} at {client.meta.endpoint_url}"
        try:
            client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "?")
            reason = "does not exist" if code in ("404", "NoSuchBucket") else f"refused ({code})"
            raise BlobStoreUnavailable(f"{where}: {reason}") from exc
        except BotoCoreError as exc:
            raise BlobStoreUnavailable(f"{where}: unreachable ({type(exc).__name__})") from exc
        return where

    def _check_client(self, timeout_s: float) -> Any:
        if self.access is None:
            return self.client
        from botocore.config import Config

        config = Config(connect_timeout=timeout_s, read_timeout=timeout_s, retries={"max_attempts": 1})
        return make_s3_client(self.access, config=config)

    def object_key(self, key: str) -> str:
        return self.prefix + check_key(key)

    # -- writing -----------------------------------------------------------------------------
    def _store(self, info: BlobInfo, data: bytes) -> None:
        from botocore.exceptions import ClientError

        if not self._conditional_put and self._head(info.key) is not None:
            self._cache(info, data)
            return
        extra = {"IfNoneMatch": "*"} if self._conditional_put else {}
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=self.object_key(info.key),
                Body=data,
                ContentType=info.mime,
                Metadata={"width": str(info.width), "height": str(info.height)},
                **extra,
            )
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status in (409, 412):  # already stored (or being stored) by someone: same bytes
                log.debug("blob %s already in the bucket", info.key)
            elif status == 501 and self._conditional_put:
                log.warning("the object store does not support conditional writes; checking with HEAD instead")
                self._conditional_put = False
                self._store(info, data)
                return
            else:
                raise
        self._cache(info, data)

    # -- named blobs: objects under <prefix>named/, replaced in place (training checkpoints) -----
    def put_named(self, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._named_key(name), Body=data)

    def get_named(self, name: str) -> bytes | None:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._named_key(name))
        except self.client.exceptions.NoSuchKey:
            return None
        return bytes(response["Body"].read())

    def delete_named(self, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._named_key(name))

    def _named_key(self, name: str) -> str:
        return f"{self.prefix}named/{check_name(name)}"

    # -- reading -----------------------------------------------------------------------------
    def path(self, key: str) -> Path:
        target = self.local_path(key)
        if target.exists() and self._info_path(key).exists():
            _touch(target)
            return target
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))
        except self.client.exceptions.NoSuchKey:
            raise BlobNotFound(key) from None
        data = response["Body"].read()
        self._cache(_info_from(key, response), data)
        return target

    def exists(self, key: str) -> bool:
        return self.local_path(key).exists() or self._head(key) is not None

    def info(self, key: str) -> BlobInfo:
        if self._info_path(key).exists():
            return super().info(key)
        info = self._head(key)
        if info is None:
            raise BlobNotFound(key)
        return info

    def _head(self, key: str) -> BlobInfo | None:
        from botocore.exceptions import ClientError

        try:
            response = self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return None
            raise
        return _info_from(key, response)

    # -- the bounded cache -------------------------------------------------------------------
    def _cache(self, info: BlobInfo, data: bytes) -> None:
        self._write_local(info, data)
        with self._lock:
            if self._cached is None:
                self._cached = self.cache_size()
            else:
                self._cached += len(data)
            if self._cached > self.cache_bytes:
                self._cached = self._evict()

    def cache_size(self) -> int:
        """Bytes of blobs in the local cache (sidecars not counted)."""
        total = 0
        for blob in self._cached_blobs():
            try:
                total += blob.stat().st_size
            except FileNotFoundError:
                pass
        return total

    def _cached_blobs(self) -> list[Path]:
        if not self.root.exists():
            return []
        return [p for p in self.root.glob("??/??/*") if p.suffix == "" and p.is_file()]

    def _evict(self) -> int:
        """Remove least recently used blobs until the cache is at EVICT_TO of its bound."""
        entries = []
        for blob in self._cached_blobs():
            try:
                stat = blob.stat()
            except FileNotFoundError:  # another process sharing the folder evicted it
                continue
            entries.append((stat.st_mtime, stat.st_size, blob))
        entries.sort(key=lambda e: e[0])
        total = sum(size for _, size, _ in entries)
        keep_after = time.time() - KEEP_RECENT_S
        for mtime, size, blob in entries:
            if total <= self.cache_bytes * EVICT_TO or mtime > keep_after:
                break
            for item in (blob.with_suffix(".json"), blob):
                item.unlink(missing_ok=True)
            total -= size
        return total


def _info_from(key: str, response: dict[str, Any]) -> BlobInfo:
    meta = response.get("Metadata") or {}
    return BlobInfo(
        key=key,
        mime=response.get("ContentType") or "application/octet-stream",
        width=int(meta.get("width", 0)),
        height=int(meta.get("height", 0)),
        size=int(response.get("ContentLength", 0)),
    )


def _touch(path: Path) -> None:
    try:
        os.utime(path)  # mtime = last use: the eviction order
    except FileNotFoundError:
        pass
