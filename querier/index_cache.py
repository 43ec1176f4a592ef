"""What the querier keeps between requests: tenants' bucket indexes and blocks' indexes.

A bucket index is one small GET, refreshed when older than `refresh_s` (and at once when
the gateway in this process uploads a block). A block index is the one big read a query
makes of a block; decoded indexes are kept in a least-recently-used cache bounded in
bytes, so repeated queries fetch only chunk pages.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict

from blocks.bucket_index import BucketIndex, load_bucket_index
from blocks.index import BlockIndex, decode_index
from blocks.meta import INDEX_FILENAME
from blocks.objstore.base import ObjectStore
from querier.index_files import IndexFiles

log = logging.getLogger(__name__)

# An index that would take more than this share of the memory cache is kept on disk
# instead (when there is a disk cache), so that one big block cannot push out every other.
SPILL_SHARE = 4


# Python's str overhead, roughly, per symbol on top of its characters.
_SYMBOL_OVERHEAD_BYTES = 56


def symbols_nbytes(index: BlockIndex) -> int:
    """Memory an index's symbols hold as Python strings."""
    return sum(len(s) + _SYMBOL_OVERHEAD_BYTES for s in index.symbols)


def index_nbytes(index: BlockIndex) -> int:
    """Memory a decoded block index holds, near enough to budget a cache by."""
    columns = (
        index.label_offsets,
        index.label_pairs,
        index.chunk_offsets,
        index.chunks.page,
        index.chunks.slot,
        index.chunks.mint,
        index.chunks.maxt,
        index.chunks.samples,
        index.pages.segment,
        index.pages.offset,
        index.pages.length,
        index.posting_names,
        index.posting_values,
        index.posting_offsets,
        index.posting_series,
    )
    return sum(a.nbytes for a in columns) + symbols_nbytes(index)


class BlockIndexCache:
    """Block indexes by (tenant, block id): decoded in memory, least recently used first
    out; with `files`, those too big for a share of the memory decoded once onto local
    disk and read in place from there (querier/index_files.py)."""

    def __init__(self, store: ObjectStore, max_bytes: int, files: IndexFiles | None = None) -> None:
        self.store = store
        self.max_bytes = max_bytes
        self.files = files
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple[str, str], tuple[BlockIndex, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, tenant: str, block_id: str, source: ObjectStore | None = None) -> BlockIndex:
        """The block's index, from memory or disk, or fetched from `source` (else the
        bucket) and decoded. A block has one index wherever it is (upload queue or
        bucket), so one entry serves both."""
        key = (tenant, block_id)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry[0]
        mapped = self.files.get(key) if self.files is not None else None
        if mapped is not None:
            with self._lock:
                self.hits += 1
            return mapped
        with self._lock:
            self.misses += 1
        # Fetched outside the lock: two queries may fetch one index at once, which costs
        # a duplicate read but never blocks every query behind one slow GET.
        store = source if source is not None else self.store
        index = decode_index(store.get(f"{tenant}/{block_id}/{INDEX_FILENAME}"))
        size = index_nbytes(index)
        if self.files is not None and size > self.max_bytes // SPILL_SHARE:
            try:
                return self.files.put(key, index)
            except OSError as exc:
                log.warning(
                    "block index not kept on disk tenant=%s block=%s error=%s",
                    tenant,
                    block_id,
                    exc,
                )
                return index
        with self._lock:
            if key not in self._entries and size <= self.max_bytes:
                self._entries[key] = (index, size)
                self.nbytes += size
                while self.nbytes > self.max_bytes:
                    _, (_, evicted) = self._entries.popitem(last=False)
                    self.nbytes -= evicted
        return index

    def __len__(self) -> int:
        return len(self._entries)


class BucketIndexCache:
    """Each tenant's bucket index, reloaded when older than `refresh_s` or invalidated."""

    def __init__(self, store: ObjectStore, *, refresh_s: float, max_age_ms: int) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self.max_age_ms = max_age_ms
        self._entries: dict[str, tuple[BucketIndex, float]] = {}
        # Bumped by every invalidation, so a load that began before one is not kept.
        self._generation: dict[str, int] = {}
        self._lock = threading.Lock()

    def get(self, tenant: str) -> BucketIndex:
        """The tenant's blocks as of at most `refresh_s` ago, or since the last invalidation."""
        with self._lock:
            entry = self._entries.get(tenant)
            generation = self._generation.get(tenant, 0)
        if entry is not None and time.monotonic() - entry[1] < self.refresh_s:
            return entry[0]
        loaded_at = time.monotonic()
        index = load_bucket_index(self.store, tenant, max_age_ms=self.max_age_ms)
        with self._lock:
            if self._generation.get(tenant, 0) == generation:
                self._entries[tenant] = (index, loaded_at)
        return index

    def invalidate(self, tenant: str) -> None:
        """Forget a tenant's index: the next query loads it again."""
        with self._lock:
            self._entries.pop(tenant, None)
            self._generation[tenant] = self._generation.get(tenant, 0) + 1
