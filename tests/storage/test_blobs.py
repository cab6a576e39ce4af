"""The content-addressed blob store: dedup, metadata, atomic writes."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest
from PIL import Image

from storage.blobs import BlobNotFound, BlobStore


def png(color: tuple[int, int, int], size: tuple[int, int] = (32, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def test_put_get_is_content_addressed_and_dedups(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    red = png((255, 0, 0))
    key = blobs.put(red)
    assert key == hashlib.sha256(red).hexdigest()
    assert blobs.put(red) == key  # identical bytes are stored once
    assert blobs.get(key) == red
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".json"]
    assert files == [blobs.path(key)]
    assert blobs.put(png((0, 255, 0))) != key


def test_info_records_mime_width_height(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    buf = io.BytesIO()
    Image.new("RGB", (40, 24), "blue").save(buf, format="JPEG")
    info = blobs.info(blobs.put(buf.getvalue()))
    assert (info.mime, info.width, info.height, info.size) == ("image/jpeg", 40, 24, len(buf.getvalue()))
    png_key = blobs.put_image(Image.new("RGB", (8, 12)))
    assert blobs.info(png_key).mime == "image/png"
    assert blobs.open_image(png_key).size == (8, 12)


def test_missing_and_malformed_keys(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    with pytest.raises(BlobNotFound):
        blobs.get("0" * 64)
    with pytest.raises(ValueError):
        blobs.path("../../etc/passwd")


def test_a_failed_write_leaves_no_partial_blob(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blobs = BlobStore(tmp_path)
    data = png((1, 2, 3))

    def crash(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        blobs.put(data)
    monkeypatch.undo()
    key = hashlib.sha256(data).hexdigest()
    assert not blobs.exists(key)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # the temp file is gone too
    assert blobs.get(blobs.put(data)) == data  # and a retry succeeds
