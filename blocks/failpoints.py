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
ALL_POINTS = MERGE_POINTS + DOWNSAMPLE_POINTS + DELETE_POINTS

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
