"""Big decoded block indexes kept on local disk and read in place (memory-mapped).

A block of a million series has an index of 12 MB in the bucket that decodes to about
90 MiB of columns: more than the memory a small querier can give its index cache, and
decoding it again for every query costs 50 ms plus the download. Such an index is
decoded once, its columns written here as .npy files, and from then on read through
memory maps: a query touches the pages of the few series it selects, the kernel keeps
or drops those pages as memory allows, and the process's own memory holds only the
block's symbols. The directory is a cache of what the bucket holds: emptied at start,
its files bounded in bytes, least recently used index first out. Nothing here is
durable or shared between processes.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import shutil
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from blocks.index import BlockIndex

log = logging.getLogger(__name__)

# Columns smaller than this are read into memory rather than mapped: a map costs a file
# descriptor's worth of kernel state and at least a page, which a tiny column is not worth.
MAP_MIN_BYTES = 64 << 10

T = TypeVar("T")


class IndexFiles:
    """Decoded indexes by (tenant, block id) under `root`/p<pid>, at most `max_bytes` of
    files."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self._numbers = itertools.count()
        self._entries: OrderedDict[tuple[str, str], tuple[BlockIndex, Path, int]] = OrderedDict()
        self._lock = threading.Lock()
        # One directory per process, so that a `strata query` and a `strata serve` given
        # one data directory keep apart; those of processes gone are removed.
        root.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(root)
        self.dir = root / f"p{os.getpid()}"
        shutil.rmtree(self.dir, ignore_errors=True)  # an earlier process with our pid
        self.dir.mkdir()

    def get(self, key: tuple[str, str]) -> BlockIndex | None:
        """The mapped index, if it is here."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[0]

    def put(self, key: tuple[str, str], index: BlockIndex) -> BlockIndex:
        """Write `index`'s columns and give back the same index read from the files.

        OSError (disk full, say) is the caller's to handle: the index it decoded still
        answers its query."""
        with self._lock:
            self.misses += 1
            number = next(self._numbers)
        staging = self.dir / f".staging-{number}"
        final = self.dir / f"{number:08d}"
        try:
            staging.mkdir()
            size = sum(_save(staging, name, array) for name, array in _columns(index))
            os.rename(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        mapped = _mapped(index, final)
        evicted = []
        with self._lock:
            if key in self._entries:  # another query wrote it meanwhile: keep theirs
                evicted.append(final)
                mapped = self._entries[key][0]
                self._entries.move_to_end(key)
            elif size > self.max_bytes:
                evicted.append(final)  # the maps stay readable after the files go
            else:
                self._entries[key] = (mapped, final, size)
                self.nbytes += size
                while self.nbytes > self.max_bytes:
                    _, (_, path, freed) = self._entries.popitem(last=False)
                    self.nbytes -= freed
                    evicted.append(path)
        # Queries still holding an evicted index keep reading it: on Linux a removed
        # file's pages live until the last map of them goes.
        for path in evicted:
            shutil.rmtree(path, ignore_errors=True)
        return mapped

    def __len__(self) -> int:
        return len(self._entries)


def _remove_abandoned(root: Path) -> None:
    for path in root.glob("p*"):
        pid = path.name[1:]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # somebody else's process
    return True


def _columns(obj: Any, prefix: str = "") -> list[tuple[str, np.ndarray]]:
    """Every numpy column of an index, named by its path of fields."""
    found = []
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        if isinstance(value, np.ndarray):
            found.append((prefix + field.name, value))
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            found.extend(_columns(value, f"{prefix}{field.name}."))
    return found


def _save(directory: Path, name: str, array: np.ndarray) -> int:
    path = directory / f"{name}.npy"
    np.save(path, np.ascontiguousarray(array), allow_pickle=False)
    return path.stat().st_size


def _mapped(obj: T, directory: Path, prefix: str = "") -> T:
    """`obj` with each column replaced by the one in `directory` (mapped if large)."""
    changes: dict[str, Any] = {}
    for field in dataclasses.fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, field.name)
        if isinstance(value, np.ndarray):
            path = directory / f"{prefix}{field.name}.npy"
            if value.nbytes >= MAP_MIN_BYTES:
                # A plain array over the mapping: np.memmap's own indexing runs Python code
                # on every lookup (a microsecond each, a hundred times in a small read).
                mapped = np.load(path, mmap_mode="r", allow_pickle=False)
                changes[field.name] = np.asarray(mapped)
            else:
                changes[field.name] = np.load(path, allow_pickle=False)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            changes[field.name] = _mapped(value, directory, f"{prefix}{field.name}.")
    return dataclasses.replace(obj, **changes)  # type: ignore[type-var]
