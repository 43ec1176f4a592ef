"""Named places where a test can have the process killed, as kill -9 would.

`STRATA_FAILPOINTS=name[,name…]` in the environment arms them; unset (production) each
call is one set lookup. An armed point sends the process SIGKILL, so no `finally`,
no atexit and no buffered write runs: the bucket is left exactly as a crash leaves it.
"""

from __future__ import annotations

import logging
import os
import signal

ENV = "STRATA_FAILPOINTS"

# The compactor's failpoints, in the order a merge passes them; tests walk these lists.
MERGE_POINTS = (
    "compact.merge.before_upload",  # block written locally, nothing in the bucket
    "compact.merge.after_chunks",  # chunk segments uploaded, no index, no meta.json
    "compact.merge.after_upload",  # complete in the bucket, not in the bucket index
    "compact.merge.after_index",  # indexed, sources not marked
    "compact.merge.after_first_mark",  # one source marked, the others not
)
DOWNSAMPLE_POINTS = (
    "compact.downsample.after_chunks",
    "compact.downsample.after_upload",
    "compact.downsample.after_index",
)
DELETE_POINTS = (
    "compact.delete.after_unindex",  # gone from the index, objects still there
    "compact.delete.after_meta",  # meta.json deleted, the rest not
)
ALL_POINTS = MERGE_POINTS + DOWNSAMPLE_POINTS + DELETE_POINTS  # the compactor's
# The gateway's, in the order a cut passes them on its way from head to bucket.
UPLOAD_POINTS = (
    "gateway.cut.after_build",  # blocks in the upload queue, the kept samples not re-logged
    "gateway.cut.after_checkpoint",  # kept samples durable in the new segment, no upload
    "gateway.upload.after_chunks",  # chunk segments in the bucket, no index, no meta.json
    "gateway.upload.after_meta",  # complete in the bucket, not in the bucket index
    "gateway.upload.after_index",  # in the bucket index, still in the upload queue
    "gateway.upload.after_dequeue",  # out of the queue, its WAL segments not yet removed
    "gateway.wal.after_first_removal",  # one old WAL segment deleted, any others not
)

log = logging.getLogger(__name__)


def armed() -> frozenset[str]:
    """The failpoints the environment arms."""
    return frozenset(p.strip() for p in os.environ.get(ENV, "").split(",") if p.strip())


def failpoint(name: str) -> None:
    """Die here, at once and uncleanly, if `name` is armed."""
    if name in armed():
        log.warning("failpoint %s reached: killing the process", name)
        logging.shutdown()
        os.kill(os.getpid(), signal.SIGKILL)
