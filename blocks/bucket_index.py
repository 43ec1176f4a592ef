"""The bucket index: one small object per tenant naming its blocks, so readers never list.

`<tenant>/bucket-index.json.zst` holds every block's meta and every deletion mark. Each
writer (a gateway after an upload, the compactor after a merge or a mark) changes it by
compare-and-swap: read it with its version tag, apply the change, put it back only if
nobody wrote in between, else start over. A missing or unreadable index is rebuilt from
a listing. Readers that find it missing, unreadable or older than they accept list the
bucket instead. Layout and the fallback without compare-and-swap: docs/bucket-index.md.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import zstandard

from blocks.compression import decompress
from blocks.errors import CorruptBlock, NotFound, StorageError
from blocks.meta import META_FILENAME, BlockMeta
from blocks.objstore.base import ObjectStore
from blocks.ulid import is_ulid

log = logging.getLogger(__name__)

INDEX_FILENAME = "bucket-index.json.zst"
DELETION_MARK_FILENAME = "deletion-mark.json"
INDEX_VERSION = 1
# A tenant with a hundred thousand blocks stays far below this; more is corruption.
MAX_INDEX_BYTES = 256 << 20
# Racing writers retry this often, with a growing random pause, before giving up (503).
CAS_ATTEMPTS = 12
CAS_PAUSE_S = 0.05


def index_key(tenant: str) -> str:
    """Where a tenant's bucket index lives."""
    return f"{tenant}/{INDEX_FILENAME}"


def deletion_mark_key(tenant: str, block_id: str) -> str:
    """Where a block's deletion mark lives."""
    return f"{tenant}/{block_id}/{DELETION_MARK_FILENAME}"


@dataclass(frozen=True, slots=True)
class BucketIndex:
    """A tenant's blocks by id and, for blocks marked for deletion, when they were marked."""

    tenant: str
    updated_ms: int
    blocks: dict[str, BlockMeta] = field(default_factory=dict)
    deletion_marks: dict[str, int] = field(default_factory=dict)

    def overlapping(self, mint: int, maxt: int) -> list[BlockMeta]:
        """Blocks with data in [mint, maxt] (inclusive; a block's maxt is exclusive)."""
        return sorted(
            (m for m in self.blocks.values() if m.mint <= maxt and m.maxt > mint),
            key=lambda m: (m.mint, m.block_id),
        )

    def encode(self) -> bytes:
        """The object's bytes: zstd-compressed JSON, blocks sorted by id."""
        doc = {
            "version": INDEX_VERSION,
            "tenant": self.tenant,
            "updatedMs": self.updated_ms,
            "blocks": [self.blocks[b].to_dict() for b in sorted(self.blocks)],
            "deletionMarks": {b: self.deletion_marks[b] for b in sorted(self.deletion_marks)},
        }
        return zstandard.ZstdCompressor(level=9).compress(json.dumps(doc).encode())

    @classmethod
    def decode(cls, data: bytes) -> BucketIndex:
        """Parse the object; CorruptBlock if this version cannot read it."""
        try:
            doc = json.loads(decompress(data, limit=MAX_INDEX_BYTES, what="bucket index"))
            if doc["version"] != INDEX_VERSION:
                raise CorruptBlock(
                    f"bucket index version {doc['version']} is not supported (this reads "
                    f"{INDEX_VERSION})",
                    obj=INDEX_FILENAME,
                )
            metas = [BlockMeta.from_dict(b) for b in doc["blocks"]]
            return cls(
                tenant=str(doc["tenant"]),
                updated_ms=int(doc["updatedMs"]),
                blocks={m.block_id: m for m in metas},
                deletion_marks={str(k): int(v) for k, v in doc["deletionMarks"].items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CorruptBlock(f"bucket index unreadable: {exc!r}", obj=INDEX_FILENAME) from None


def scan_tenant(store: ObjectStore, tenant: str) -> BucketIndex:
    """The index a listing gives: every block with meta.json, every deletion mark.

    A listing is one request per thousand objects plus one read per block; this is what
    the index saves readers from.
    """
    block_ids: set[str] = set()
    marked: set[str] = set()
    for key in store.list(f"{tenant}/"):
        parts = key.split("/")
        if len(parts) != 3 or not is_ulid(parts[1]):
            continue
        if parts[2] == META_FILENAME:
            block_ids.add(parts[1])
        elif parts[2] == DELETION_MARK_FILENAME:
            marked.add(parts[1])
    blocks = {}
    for block_id in sorted(block_ids):
        try:
            meta_json = store.get(f"{tenant}/{block_id}/{META_FILENAME}")
        except NotFound:
            continue  # deleted since the listing
        try:
            blocks[block_id] = BlockMeta.from_json(meta_json)
        except CorruptBlock as exc:
            # Unreadable for this version (or damaged): no reader here could use it either.
            log.warning(
                "block left out of the index tenant=%s block=%s error=%s", tenant, block_id, exc
            )
    marks = {}
    for block_id in sorted(marked & block_ids):
        try:
            marks[block_id] = read_deletion_mark(store, tenant, block_id)
        except NotFound:
            continue
    return BucketIndex(tenant, _now_ms(), blocks, marks)


def read_bucket_index(store: ObjectStore, tenant: str) -> BucketIndex | None:
    """The stored index, or None if there is none; CorruptBlock if unreadable."""
    try:
        return BucketIndex.decode(store.get(index_key(tenant)))
    except NotFound:
        return None


def load_bucket_index(store: ObjectStore, tenant: str, *, max_age_ms: int) -> BucketIndex:
    """What readers use: the stored index if readable and younger than `max_age_ms`,
    else a listing (slower, always right)."""
    try:
        index = read_bucket_index(store, tenant)
    except CorruptBlock as exc:
        log.warning("bucket index unreadable, listing instead tenant=%s error=%s", tenant, exc)
        index = None
    if index is not None and _now_ms() - index.updated_ms <= max_age_ms:
        return index
    return scan_tenant(store, tenant)


def update_bucket_index(
    store: ObjectStore, tenant: str, change: Callable[[BucketIndex], BucketIndex]
) -> BucketIndex:
    """Apply `change` to the stored index by compare-and-swap; the index written.

    A missing or unreadable index is first rebuilt from a listing. StorageError (503)
    when racing writers keep winning for CAS_ATTEMPTS rounds.
    """
    key = index_key(tenant)
    for attempt in range(CAS_ATTEMPTS):
        try:
            data, etag = store.get_with_etag(key)
        except NotFound:
            data, etag = b"", ""
        try:
            current = BucketIndex.decode(data) if etag else scan_tenant(store, tenant)
        except CorruptBlock as exc:
            log.warning("bucket index unreadable, rebuilding tenant=%s error=%s", tenant, exc)
            current = scan_tenant(store, tenant)
        updated = replace(change(current), updated_ms=_now_ms())
        payload = updated.encode()
        written = (
            store.put_if_match(key, payload, etag) if etag else store.put_if_absent(key, payload)
        )
        if written:
            return updated
        time.sleep(random.uniform(0, CAS_PAUSE_S * (attempt + 1)))
    raise StorageError("update", key, f"lost the compare-and-swap race {CAS_ATTEMPTS} times")


def add_blocks(store: ObjectStore, tenant: str, metas: Iterable[BlockMeta]) -> BucketIndex:
    """Record uploaded blocks (their meta.json already in the bucket)."""
    added = list(metas)

    def change(index: BucketIndex) -> BucketIndex:
        return replace(index, blocks=index.blocks | {m.block_id: m for m in added})

    return update_bucket_index(store, tenant, change)


def remove_blocks(store: ObjectStore, tenant: str, block_ids: Iterable[str]) -> BucketIndex:
    """Forget deleted blocks and their marks."""
    gone = set(block_ids)

    def change(index: BucketIndex) -> BucketIndex:
        return replace(
            index,
            blocks={b: m for b, m in index.blocks.items() if b not in gone},
            deletion_marks={b: t for b, t in index.deletion_marks.items() if b not in gone},
        )

    return update_bucket_index(store, tenant, change)


def rebuild_bucket_index(store: ObjectStore, tenant: str) -> BucketIndex:
    """Replace the index by what a listing finds: the repair for drift of any kind."""
    return update_bucket_index(store, tenant, lambda _: scan_tenant(store, tenant))


def mark_for_deletion(store: ObjectStore, tenant: str, block_id: str) -> BucketIndex:
    """Write the block's deletion mark (once; the first time counts), then index it."""
    return mark_blocks_for_deletion(store, tenant, [block_id])


def mark_blocks_for_deletion(
    store: ObjectStore,
    tenant: str,
    block_ids: Iterable[str],
    *,
    after_first: Callable[[], None] | None = None,
) -> BucketIndex:
    """Write each block's deletion mark (once; the first time counts), then index them
    all in one update. `after_first` runs after the first mark is written (a failpoint)."""
    marks = {}
    for number, block_id in enumerate(block_ids):
        if number == 1 and after_first is not None:
            after_first()
        doc: dict[str, Any] = {"version": 1, "ulid": block_id, "deletionMs": _now_ms()}
        store.put_if_absent(deletion_mark_key(tenant, block_id), json.dumps(doc).encode())
        marks[block_id] = read_deletion_mark(store, tenant, block_id)

    def change(index: BucketIndex) -> BucketIndex:
        return replace(index, deletion_marks=index.deletion_marks | marks)

    return update_bucket_index(store, tenant, change)


def read_deletion_mark(store: ObjectStore, tenant: str, block_id: str) -> int:
    """When the block was marked for deletion (ms); NotFound if it is not marked."""
    data = store.get(deletion_mark_key(tenant, block_id))
    try:
        return int(json.loads(data)["deletionMs"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptBlock(
            f"deletion mark unreadable: {exc!r}", block_id=block_id, obj=DELETION_MARK_FILENAME
        ) from None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
