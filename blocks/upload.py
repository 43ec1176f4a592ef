"""Putting a locally built block into a bucket, and finding the blocks a bucket holds.

Order is the crash-safety contract (docs/block-format.md#objects): chunk segments, then
the index, then meta.json last. A block without meta.json does not exist for readers,
so an upload cut short leaves only garbage for a later clean-up, never a half block.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from blocks.errors import StorageError
from blocks.meta import CHUNKS_DIRNAME, INDEX_FILENAME, META_FILENAME, BlockMeta
from blocks.objstore.base import ObjectStore
from blocks.ulid import is_ulid

log = logging.getLogger(__name__)


def upload_block(
    store: ObjectStore,
    block_dir: Path,
    tenant: str,
    *,
    after_chunks: Callable[[], None] | None = None,
) -> BlockMeta:
    """Upload `block_dir` (named by its ULID) under `<tenant>/<id>/`, meta.json last.

    Files are streamed, never read whole. StorageError if an object is missing once
    meta.json is in: the caller uploads again (every put overwrites with the same bytes).
    `after_chunks` runs between the chunk segments and the index (a failpoint).
    """
    meta = BlockMeta.from_json((block_dir / META_FILENAME).read_bytes())
    prefix = f"{tenant}/{meta.block_id}"
    segments = sorted((block_dir / CHUNKS_DIRNAME).iterdir())
    expected = {f"{prefix}/{INDEX_FILENAME}", f"{prefix}/{META_FILENAME}"}
    for path in segments:
        key = f"{prefix}/{CHUNKS_DIRNAME}/{path.name}"
        store.put_file(key, path)
        expected.add(key)
    if after_chunks is not None:
        after_chunks()
    store.put_file(f"{prefix}/{INDEX_FILENAME}", block_dir / INDEX_FILENAME)
    store.put(f"{prefix}/{META_FILENAME}", meta.to_json())
    # A partial-upload cleaner that judged an earlier, abandoned attempt of this very
    # block old enough may have deleted objects while they were being put again.
    missing = expected - set(store.list(f"{prefix}/"))
    if missing:
        raise StorageError("upload", prefix, f"objects vanished during upload: {sorted(missing)}")
    log.info("uploaded block tenant=%s block=%s bytes=%d", tenant, meta.block_id, meta.stats.bytes)
    return meta


def list_blocks(store: ObjectStore, tenant: str) -> list[str]:
    """Ids of the complete blocks of a tenant (those with meta.json), oldest first."""
    blocks = set()
    for key in store.list(f"{tenant}/"):
        parts = key.split("/")
        if len(parts) == 3 and parts[2] == META_FILENAME and is_ulid(parts[1]):
            blocks.add(parts[1])
    return sorted(blocks)


def delete_block(store: ObjectStore, tenant: str, block_id: str) -> None:
    """Remove a block: meta.json first, so it stops existing before its data goes."""
    prefix = f"{tenant}/{block_id}"
    store.delete(f"{prefix}/{META_FILENAME}")
    for key in store.list(f"{prefix}/"):
        store.delete(key)
