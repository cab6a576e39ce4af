"""The blob store interface and its local-folder backend (see storage.blobs for the whole picture).

Content-addressed image store: one interface, two backends.

``put(data)`` stores bytes under their sha256 and returns that hex digest as the key; identical
images are stored once and a stored key is never written again. Each blob carries its mime type,
width, height and size (:class:`BlobInfo`). ``path(key)`` always gives a local file: front ends
upload from it and the engine opens it.

* :class:`BlobStore` (BLOB_URL unset): a local folder, BLOB_DIR. Files are written to a temporary
  file in the same folder and renamed into place, so a reader never sees half a file and a crash
  leaves no partial blob; a small JSON sidecar next to each blob records its :class:`BlobInfo`.
* :class:`storage.s3_blobs.S3BlobStore` (BLOB_URL=s3://bucket/prefix): the same interface on
  S3-compatible object storage; BLOB_DIR is then its local cache, bounded by BLOB_CACHE_MB.

:func:`storage.blobs.open_blob_store` picks the backend from the settings.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

_KEY = re.compile(r"^[0-9a-f]{64}$")
#: names of named blobs: path-like, no "..", e.g. ``train/<job id>/checkpoint``
_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*(/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*$")
_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}


class BlobNotFound(KeyError):
    pass


class BlobStoreUnavailable(RuntimeError):
    """The blob store cannot be used (S3 endpoint down, bucket missing, no access); the message
    names what failed, for operators (never shown to chat users)."""


@dataclass(frozen=True)
class BlobInfo:
    key: str
    mime: str
    width: int
    height: int
    size: int


def check_name(name: str) -> str:
    """``name`` if it is a valid named-blob name (path-like, no ".."), else ValueError."""
    if not _NAME.match(name) or ".." in name:
        raise ValueError(f"not a blob name: {name!r}")
    return name


def check_key(key: str) -> str:
    if not _KEY.match(key):
        raise ValueError(f"not a blob key: {key!r}")
    return key


class BlobStore:
    """The blob store interface, and its local-folder backend."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def check(self, timeout_s: float = 3.0) -> str:
        """Raise :class:`BlobStoreUnavailable` unless the store can be used; what was checked."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BlobStoreUnavailable(f"blob folder {self.root} unusable: {exc}") from exc
        return f"folder {self.root}"

    # -- paths -------------------------------------------------------------------------------
    def local_path(self, key: str) -> Path:
        """Where ``key`` lives (or would live) under :attr:`root`; nothing is fetched."""
        check_key(key)
        return self.root / key[:2] / key[2:4] / key

    def path(self, key: str) -> Path:
        """A local file holding the blob (a backend with a remote store fetches it first)."""
        return self.local_path(key)

    def _info_path(self, key: str) -> Path:
        return self.local_path(key).with_suffix(".json")

    # -- writing -----------------------------------------------------------------------------
    def put(self, data: bytes) -> str:
        """Store ``data`` (an image the caller has validated) and return its key."""
        key = hashlib.sha256(data).hexdigest()
        if self.local_path(key).exists() and self._info_path(key).exists():
            return key
        self._store(BlobInfo(key=key, size=len(data), **_describe(data)), data)
        return key

    # -- named blobs: mutable, by name (training checkpoints) ----------------------------------
    def put_named(self, name: str, data: bytes) -> None:
        """Store ``data`` under a ``name`` (a training checkpoint, ``train/<job id>/checkpoint``),
        replacing what was there; named blobs are mutable, content blobs are not."""
        target = self._named_path(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(target, data)

    def get_named(self, name: str) -> bytes | None:
        """The bytes stored under ``name``, or ``None``."""
        try:
            return self._named_path(name).read_bytes()
        except FileNotFoundError:
            return None

    def delete_named(self, name: str) -> None:
        self._named_path(name).unlink(missing_ok=True)

    def _named_path(self, name: str) -> Path:
        return self.root / "named" / check_name(name)

    def put_image(self, image: Image.Image, format: str = "PNG") -> str:
        if format == "PNG":
            return self.put(encode_png(image))
        buf = io.BytesIO()
        image.save(buf, format=format)
        return self.put(buf.getvalue())

    def _store(self, info: BlobInfo, data: bytes) -> None:
        self._write_local(info, data)

    def _write_local(self, info: BlobInfo, data: bytes) -> None:
        target = self.local_path(info.key)
        target.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(target, data)
        _atomic_write(self._info_path(info.key), json.dumps(asdict(info)).encode())

    # -- reading -----------------------------------------------------------------------------
    def exists(self, key: str) -> bool:
        return self.local_path(key).exists()

    def get(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(key) from None

    def open_image(self, key: str) -> Image.Image:
        image = Image.open(io.BytesIO(self.get(key)))
        image.load()
        return image

    def info(self, key: str) -> BlobInfo:
        try:
            raw = json.loads(self._info_path(key).read_text())
        except FileNotFoundError:
            data = self.get(key)  # blob written by an older version without a sidecar
            return BlobInfo(key=key, size=len(data), **_describe(data))
        return BlobInfo(**raw)


def _describe(data: bytes) -> dict[str, object]:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return {
                "mime": _MIME.get(image.format or "", "application/octet-stream"),
                "width": image.width,
                "height": image.height,
            }
    except Exception:
        return {"mime": "application/octet-stream", "width": 0, "height": 0}


def _atomic_write(target: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=target.suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


#: zlib level of PNGs the app encodes. PNG is lossless at every level; measured on a 1024² photo
#: (bench/outside_model.py): level 1 encodes several times faster than Pillow's default 6 for
#: files about 10% larger.
DEFAULT_PNG_COMPRESS_LEVEL = 1


def encode_png(image: Image.Image, compress_level: int = DEFAULT_PNG_COMPRESS_LEVEL) -> bytes:
    """``image`` as PNG bytes (lossless; ``compress_level`` 0-9 trades size for time)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()
