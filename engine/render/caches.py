"""What the engine keeps between jobs: per-thread caches of decoded images, context latents and
prompt embeddings, so a follow-up edit of the same thread starts from warm state.

Only caches: everything in them can be rebuilt from storage. A job's results enter its thread's
cache under their blob keys after the engine lock is released (the PNG is encoded off the lock),
so each thread cache has its own small lock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from cachetools import LRUCache
from PIL import Image

#: entries of each kind a thread keeps
THREAD_CACHE_SIZE = 8


def _lru() -> LRUCache[Any, Any]:
    return LRUCache(maxsize=THREAD_CACHE_SIZE)


@dataclass
class ThreadCache:
    """What a follow-up job on the same thread can reuse: decoded images by blob key, context
    latents by (blob key, width, height) and prompt embeddings by (prompt, active adapters).

    Hold ``lock`` around every read and write (LRUCache is not thread-safe)."""

    images: LRUCache[str, Image.Image] = field(default_factory=_lru)
    latents: LRUCache[tuple[str, int, int], Any] = field(default_factory=_lru)
    prompts: LRUCache[tuple[str, Any], Any] = field(default_factory=_lru)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def rekey(self, old: str, new: str) -> None:
        """Move the image and latents cached under ``old`` to ``new`` (a provisional key to the
        blob key of the stored image)."""
        with self.lock:
            image = self.images.pop(old, None)
            if image is not None:
                self.images[new] = image
            for key in [k for k in self.latents if k[0] == old]:
                self.latents[(new, key[1], key[2])] = self.latents.pop(key)


class ThreadCaches:
    """The caches of the most recently used threads (``maxsize`` of them)."""

    def __init__(self, maxsize: int = 16) -> None:
        self._threads: LRUCache[int, ThreadCache] = LRUCache(maxsize=max(1, maxsize))

    def for_thread(self, thread_id: int | None) -> ThreadCache:
        """The thread's cache (created on first use); a fresh one for a job without a thread."""
        if thread_id is None:
            return ThreadCache()  # still shared by the renders of this one job
        cache = self._threads.get(thread_id)
        if cache is None:
            cache = self._threads[thread_id] = ThreadCache()
        return cache
