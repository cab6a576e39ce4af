"""The S3 blob store against a real S3 endpoint on loopback (moto's server), through boto3, the
production client: content addressing, no overwrite, metadata with the object, the bounded
local cache, and a second process-like store that shares only the bucket."""

from __future__ import annotations

import hashlib
import io
import os
import time
from pathlib import Path

import pytest
from PIL import Image

from storage.blob_config import parse_blob_url
from storage.blobs import BlobNotFound, BlobStore, open_blob_store
from storage.s3_blobs import KEEP_RECENT_S, S3BlobStore
from storage.settings import SettingsError, load_settings
from tests.s3_server import S3Bucket


def png(color: tuple[int, int, int], size: tuple[int, int] = (32, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def store(tmp_path: Path, bucket: S3Bucket, name: str, **overrides: object) -> BlobStore:
    settings = load_settings(blob_dir=tmp_path / name, **bucket.settings(), **overrides)
    return open_blob_store(settings)


def test_blob_url_selects_the_s3_backend_and_bad_urls_are_one_line(tmp_path: Path, s3_bucket: S3Bucket) -> None:
    assert type(open_blob_store(load_settings(blob_dir=tmp_path))) is BlobStore
    s3 = store(tmp_path, s3_bucket, "cache")
    assert isinstance(s3, S3BlobStore) and (s3.bucket, s3.prefix) == (s3_bucket.bucket, "blobs/")
    assert parse_blob_url("s3://b") == ("b", "")
    for bad in ("gs://bucket/x", "s3:///prefix"):
        with pytest.raises(SettingsError, match=r"^setting BLOB_URL: expected s3://bucket"):
            load_settings(blob_url=bad)
    with pytest.raises(SettingsError) as info:
        load_settings(aws_secret_access_key="x" * 30, aws_endpoint_url="minio:9000")
    assert "AWS_ENDPOINT_URL" in str(info.value) and "x" * 30 not in str(info.value)


def test_put_is_content_addressed_and_stored_with_its_metadata(tmp_path: Path, s3_bucket: S3Bucket) -> None:
    blobs = store(tmp_path, s3_bucket, "front")
    red = png((255, 0, 0), (40, 24))
    key = blobs.put(red)
    assert key == hashlib.sha256(red).hexdigest()
    head = s3_bucket.client().head_object(Bucket=s3_bucket.bucket, Key=f"blobs/{key}")
    assert head["ContentType"] == "image/png"
    assert head["Metadata"] == {"width": "40", "height": "24"} and head["ContentLength"] == len(red)
    assert blobs.put(red) == key  # stored once
    listed = s3_bucket.client().list_objects_v2(Bucket=s3_bucket.bucket)["Contents"]
    assert [o["Key"] for o in listed] == [f"blobs/{key}"]


def test_another_machine_reads_through_its_own_cache(tmp_path: Path, s3_bucket: S3Bucket) -> None:
    front = store(tmp_path, s3_bucket, "front")
    key = front.put_image(Image.new("RGB", (8, 12), "green"))
    worker = store(tmp_path, s3_bucket, "worker")  # shares only the bucket
    assert not worker.local_path(key).exists()
    info = worker.info(key)  # from the object's metadata (HEAD), nothing downloaded
    assert (info.mime, info.width, info.height, info.size) == ("image/png", 8, 12, len(front.get(key)))
    assert not worker.local_path(key).exists()
    path = worker.path(key)  # downloaded into the worker's cache
    assert path.is_relative_to(tmp_path / "worker") and path.read_bytes() == front.get(key)
    assert worker.open_image(key).size == (8, 12)
    assert worker.exists(key) and not worker.exists("0" * 64)
    with pytest.raises(BlobNotFound):
        worker.get("1" * 64)
    with pytest.raises(BlobNotFound):
        worker.info("1" * 64)
    with pytest.raises(ValueError):
        worker.path("../../etc/passwd")


def test_an_existing_key_is_never_overwritten(tmp_path: Path, s3_bucket: S3Bucket) -> None:
    """The conditional PUT: a write of a key the bucket holds is refused by the store itself,
    even when this process's cache does not know the key."""
    data = png((1, 2, 3))
    key = hashlib.sha256(data).hexdigest()
    client = s3_bucket.client()
    client.put_object(Bucket=s3_bucket.bucket, Key=f"blobs/{key}", Body=b"first writer", ContentType="image/png")
    blobs = store(tmp_path, s3_bucket, "w")
    assert blobs.put(data) == key  # no error: the key is taken (412), and it is the same content
    assert client.get_object(Bucket=s3_bucket.bucket, Key=f"blobs/{key}")["Body"].read() == b"first writer"


def test_the_local_cache_is_bounded_least_recently_used_first(
    tmp_path: Path, s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    blobs = store(tmp_path, s3_bucket, "cache", blob_cache_mb=16)
    assert isinstance(blobs, S3BlobStore)
    blobs.cache_bytes = 3000  # a few small images
    monkeypatch.setattr("storage.s3_blobs.KEEP_RECENT_S", 0.0)
    keys = []
    for i in range(8):
        keys.append(blobs.put(os.urandom(900)))  # not an image: stored as octet-stream
        past = time.time() - 100 + i  # older writes look less recently used
        os.utime(blobs.local_path(keys[-1]), (past, past))
    assert blobs.cache_size() <= 3000
    assert blobs.local_path(keys[-1]).exists() and not blobs.local_path(keys[0]).exists()
    assert blobs.get(keys[0])  # evicted from the cache, still in the bucket: fetched again
    assert blobs.local_path(keys[0]).exists() and blobs.cache_size() <= 3000
    assert KEEP_RECENT_S > 0  # (the module's real setting keeps files a caller was just given)


def test_recently_used_files_are_not_evicted(tmp_path: Path, s3_bucket: S3Bucket) -> None:
    blobs = store(tmp_path, s3_bucket, "cache")
    assert isinstance(blobs, S3BlobStore)
    blobs.cache_bytes = 1000
    keys = [blobs.put(os.urandom(900)) for _ in range(3)]
    assert all(blobs.local_path(k).exists() for k in keys)  # over the bound, but all just used


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_named_blobs_are_replaced_read_and_deleted_on_both_backends(
    tmp_path: Path, s3_bucket: S3Bucket, backend: str
) -> None:
    """Training checkpoints (``train/<job id>/checkpoint``) are named, replaceable blobs; a worker
    on another machine resumes from the one the killed worker left in the bucket."""
    if backend == "s3":
        first, other = store(tmp_path, s3_bucket, "first"), store(tmp_path, s3_bucket, "other")
    else:
        first = other = open_blob_store(load_settings(blob_dir=tmp_path / "local"))
    assert first.get_named("train/job1/checkpoint") is None
    first.put_named("train/job1/checkpoint", b"step 5")
    first.put_named("train/job1/checkpoint", b"step 10")  # replaced, unlike content blobs
    assert other.get_named("train/job1/checkpoint") == b"step 10"
    other.delete_named("train/job1/checkpoint")
    assert first.get_named("train/job1/checkpoint") is None
    with pytest.raises(ValueError, match="not a blob name"):
        first.put_named("../escape", b"x")


def test_check_names_a_missing_bucket_and_a_dead_endpoint(tmp_path: Path, s3_bucket: S3Bucket) -> None:
    """Issue 20 item 9: the start-up and /readyz check (a HEAD of the bucket, short timeout)."""
    import time

    from storage.blobs import BlobStoreUnavailable
    from tests.s3_server import S3Bucket as Bucket
    from tests.services import free_port

    assert s3_bucket.bucket in store(tmp_path, s3_bucket, "ok").check()
    missing = Bucket(s3_bucket.endpoint, "studio-no-such-bucket")
    with pytest.raises(BlobStoreUnavailable, match=r"'studio-no-such-bucket' .* does not exist"):
        store(tmp_path, missing, "missing").check()
    dead = Bucket(f"http://127.0.0.1:{free_port()}", s3_bucket.bucket)
    started = time.monotonic()
    with pytest.raises(BlobStoreUnavailable, match="unreachable"):
        store(tmp_path, dead, "dead").check(timeout_s=1.0)
    assert time.monotonic() - started < 5.0
