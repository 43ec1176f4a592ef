"""Decoded chunks kept between reads: repeated queries (a dashboard refreshing) skip the
fetch and the decode of what they read a moment ago.

Blocks never change, so a chunk is identified by (block id, page, slot) for ever and an
entry never needs invalidating; least recently used entries go once the cache holds
`max_bytes` of columns. Thread-safe: reads run in worker threads.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

import numpy as np

ChunkKey = tuple[str, int, int]  # block id, page, slot in the page
Chunk = tuple[np.ndarray, np.ndarray]  # timestamps, values
# Dictionary and tuple overhead of one entry, counted so tiny chunks are not free.
ENTRY_OVERHEAD_BYTES = 200

K = TypeVar("K")
V = TypeVar("V")


class LruCache(Generic[K, V]):
    """Values by key, bounded by the sizes their owners give, least recently used out
    first. Thread-safe: reads run in worker threads."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        """The value, or None (counted as a miss)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[0]

    def _put(self, key: K, value: V, size: int) -> None:
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.nbytes -= old[1]
            self._entries[key] = (value, size)
            self.nbytes += size
            while self.nbytes > self.max_bytes:
                _, (_, evicted) = self._entries.popitem(last=False)
                self.nbytes -= evicted

    def __len__(self) -> int:
        return len(self._entries)


class ChunkCache(LruCache[ChunkKey, Chunk]):
    """Decoded chunks by (block id, page, slot), bounded in bytes, LRU."""

    def put(self, key: ChunkKey, chunk: Chunk) -> None:
        """Keep a decoded chunk (its arrays must not be written to afterwards)."""
        self._put(key, chunk, chunk[0].nbytes + chunk[1].nbytes + ENTRY_OVERHEAD_BYTES)
