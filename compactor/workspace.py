"""The local directory a compactor builds blocks in, one per running process.

Several compactors may share a data directory (a CronJob whose runs overlap, two
replicas by mistake), so each claims its own `run-*` directory and holds an flock on it
while alive. Directories whose lock nobody holds are what killed runs left behind: half
built blocks, useless because their merges are planned anew. They are removed at start.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_FILENAME = ".lock"


@contextmanager
def claimed_workspace(base: Path) -> Iterator[Path]:
    """A fresh directory under `base`, ours until the context ends (then removed)."""
    base.mkdir(parents=True, exist_ok=True)
    remove_abandoned(base)
    path = Path(tempfile.mkdtemp(prefix="run-", dir=base))
    lock = os.open(path / LOCK_FILENAME, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(lock)


def remove_abandoned(base: Path) -> None:
    """Remove `run-*` directories no live process holds."""
    for path in sorted(base.glob("run-*")):
        try:
            lock = os.open(path / LOCK_FILENAME, os.O_RDWR)
        except FileNotFoundError:
            lock = -1  # killed before it took the lock, or not ours at all: unlocked
        except OSError:
            continue
        try:
            if lock >= 0:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a running compactor's
        finally:
            if lock >= 0:
                os.close(lock)
        log.info("removing what a killed compactor left path=%s", path)
        shutil.rmtree(path, ignore_errors=True)
