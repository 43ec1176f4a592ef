"""Decoded chunks kept between reads: repeated queries (a dashboard refreshing) skip the
fetch and the decode of what they read a moment ago.

Blocks never change, so a chunk is identified by (block id, page, slot) for ever and an
entry never needs invalidating; least recently used entries go once the cache holds
`max_bytes` of columns. Thread-safe: reads run in worker threads.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

ChunkKey = tuple[str, int, int]  # block id, page, slot in the page
Chunk = tuple[np.ndarray, np.ndarray]  # timestamps, values
# Dictionary and tuple overhead of one entry, counted so tiny chunks are not free.
ENTRY_OVERHEAD_BYTES = 200


class ChunkCache:
    """Decoded chunks by (block id, page, slot), bounded in bytes, LRU."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[ChunkKey, tuple[Chunk, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: ChunkKey) -> Chunk | None:
        """The chunk, or None (counted as a miss)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[0]

    def put(self, key: ChunkKey, chunk: Chunk) -> None:
        """Keep a decoded chunk (its arrays must not be written to afterwards)."""
        size = chunk[0].nbytes + chunk[1].nbytes + ENTRY_OVERHEAD_BYTES
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.nbytes -= old[1]
            self._entries[key] = (chunk, size)
            self.nbytes += size
            while self.nbytes > self.max_bytes:
                _, (_, evicted) = self._entries.popitem(last=False)
                self.nbytes -= evicted

    def __len__(self) -> int:
        return len(self._entries)
