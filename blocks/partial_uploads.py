"""Cleaning up uploads that were cut short: block prefixes with objects but no meta.json.

Such a block does not exist for readers (meta.json is written last), so its objects are
only garbage, unless an uploader is still at work on it. A prefix counts as abandoned
once both its block id (the time the block was built) and its newest object are older
than a delay far longer than any upload takes; docs/shipping.md#partial-uploads.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict

from blocks.errors import NotFound
from blocks.meta import META_FILENAME
from blocks.objstore.base import ObjectStore
from blocks.ulid import is_ulid, ulid_time_ms

log = logging.getLogger(__name__)


def partial_blocks(store: ObjectStore, tenant: str) -> dict[str, list[str]]:
    """Block id -> object keys, for every block prefix of a tenant without meta.json."""
    objects: dict[str, list[str]] = defaultdict(list)
    complete: set[str] = set()
    for key in store.list(f"{tenant}/"):
        parts = key.split("/")
        if len(parts) < 3 or not is_ulid(parts[1]):
            continue
        objects[parts[1]].append(key)
        if len(parts) == 3 and parts[2] == META_FILENAME:
            complete.add(parts[1])
    return {block: keys for block, keys in objects.items() if block not in complete}


def clean_partial_uploads(
    store: ObjectStore, tenant: str, *, min_age_ms: int, now_ms: int | None = None
) -> list[str]:
    """Delete the objects of abandoned partial blocks; the ids of the blocks cleaned."""
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    cleaned = []
    for block_id, keys in sorted(partial_blocks(store, tenant).items()):
        if now - ulid_time_ms(block_id) < min_age_ms:
            continue
        try:
            newest_ms = max(store.stat(key).modified_ms for key in keys)
        except NotFound:
            continue  # changing under us: someone is at work on it
        if now - newest_ms < min_age_ms or store.exists(f"{tenant}/{block_id}/{META_FILENAME}"):
            continue
        for key in keys:
            store.delete(key)
        log.info("removed partial upload tenant=%s block=%s keys=%d", tenant, block_id, len(keys))
        cleaned.append(block_id)
    return cleaned
