"""LocalStore: objects as files under a directory, the embedded default bucket.

A put writes a temporary file beside its target, fsyncs it and renames it over the
target, so a crash leaves the old object or the new one (plus a temporary file that
reads and listings never see). Contract in docs/object-stores.md#localstore.
"""

from __future__ import annotations

import builtins
import fcntl
import hashlib
import os
import shutil
import stat
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from blocks.errors import NotFound, StorageError
from blocks.fsync import fsync_path
from blocks.objstore.base import (
    RESERVED_SEGMENT_PREFIX,
    InvalidKey,
    ObjectStat,
    ObjectStore,
    check_key,
    check_prefix,
    check_range,
)

LOCK_FILENAME = RESERVED_SEGMENT_PREFIX + "lock"
TMP_PREFIX = RESERVED_SEGMENT_PREFIX + "tmp-"
# A concurrent delete may remove a directory that has just become empty between our
# mkdir and the creation of the temporary file in it; a few retries always get through.
_DIR_RACE_ATTEMPTS = 5
# Operations for which a missing file or a directory in the way means a missing object;
# for the others a directory in the way is a key colliding with a prefix.
_READS = frozenset({"get", "get_range", "size", "stat", "exists"})
# put_file copies in pieces of this size, so a 512 MiB segment never sits in memory.
COPY_BUFFER_BYTES = 1 << 20

# flock excludes other processes, but two threads sharing one descriptor would both get
# it; so threads of this process queue on a lock per root first.
_root_locks: dict[str, threading.Lock] = {}
_root_locks_guard = threading.Lock()


@contextmanager
def map_os_errors(op: str, key: str) -> Iterator[None]:
    """Translate OSError to NotFound, InvalidKey or StorageError: the one place that does."""
    try:
        yield
    except (IsADirectoryError, NotADirectoryError, FileExistsError) as exc:
        if op in _READS:
            raise NotFound(f"object not found: {key}") from exc
        # A directory cannot also be a file: 'a' and 'a/b' cannot both be objects here.
        raise InvalidKey(key, "collides with an object or prefix of the same name") from exc
    except FileNotFoundError as exc:
        if op in _READS:
            raise NotFound(f"object not found: {key}") from exc
        raise StorageError(op, key, exc.strerror or str(exc)) from exc
    except OSError as exc:
        raise StorageError(op, key, exc.strerror or str(exc)) from exc


def content_etag(data: bytes) -> str:
    """The version tag of an object: a 128-bit BLAKE2b of its bytes.

    A content hash needs no side file; 128 bits, unlike a CRC, make a false match between
    two versions as unlikely as it gets.
    """
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _root_lock(root: Path) -> threading.Lock:
    with _root_locks_guard:
        return _root_locks.setdefault(os.path.realpath(root), threading.Lock())


class LocalStore(ObjectStore):
    """An object store in a local directory; safe for threads and for processes on one host."""

    def __init__(self, root: Path) -> None:
        # Absolute so that a later chdir of the process cannot move the bucket.
        self.root = Path(root).absolute()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(
                self.root / LOCK_FILENAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644
            )
        except OSError as exc:
            raise StorageError("open", str(self.root), exc.strerror or str(exc)) from exc
        self._thread_lock = _root_lock(self.root)

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    @property
    def supports_conditional_put(self) -> bool:
        """Always: conditional puts commit under a lock that every writer on this host takes."""
        return True

    def put(self, key: str, data: bytes) -> None:
        """Write a temporary file, fsync it, rename it over the key, fsync the directory."""
        self._put_from("put", key, data)

    def put_file(self, key: str, path: Path) -> None:
        """As put, the temporary file filled by copying `path` piece by piece."""
        self._put_from("put_file", key, path)

    def _put_from(self, op: str, key: str, source: bytes | Path) -> None:
        path = self._path(key)
        with map_os_errors(op, key):
            tmp = self._write_temp(path.parent, source)
            try:
                with self._locked():
                    os.replace(tmp, path)
            finally:
                with suppress(FileNotFoundError):
                    tmp.unlink()
            fsync_path(path.parent)

    def get(self, key: str) -> bytes:
        """The whole file; NotFound if absent."""
        path = self._path(key)
        with map_os_errors("get", key):
            return path.read_bytes()

    def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end) by seek and read; past the end: what exists."""
        path = self._path(key)
        check_range(key, start, end)
        with map_os_errors("get_range", key), path.open("rb") as f:
            f.seek(start)
            return f.read(end - start)

    def list(self, prefix: str) -> builtins.list[str]:
        """Walk only the directory the prefix names, skipping temporary and lock files."""
        check_prefix(prefix)
        head, _, partial = prefix.rpartition("/")
        top = self.root / head
        keys: builtins.list[str] = []
        with map_os_errors("list", prefix):
            for dirpath, dirnames, filenames in os.walk(top, onerror=_raise_unless_gone):
                rel = os.path.relpath(dirpath, self.root)
                if dirpath == str(top):
                    # Only the top level holds partial matches ('a/b' matches 'a/bc/…').
                    dirnames[:] = [d for d in dirnames if d.startswith(partial)]
                    filenames = [f for f in filenames if f.startswith(partial)]
                dirnames[:] = [d for d in dirnames if not d.startswith(RESERVED_SEGMENT_PREFIX)]
                keys.extend(
                    name if rel == "." else f"{rel}/{name}"
                    for name in filenames
                    if not name.startswith(RESERVED_SEGMENT_PREFIX)
                )
        return sorted(keys)

    def delete(self, key: str) -> None:
        """Unlink and fsync the directory, then remove directories the delete left empty."""
        path = self._path(key)
        with map_os_errors("delete", key):
            with self._locked():
                try:
                    path.unlink()
                except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                    return
            # Durable, because callers order deletes (meta.json first, then the rest).
            fsync_path(path.parent)
            self._remove_empty_dirs(path.parent)

    def size(self, key: str) -> int:
        """The file's length; NotFound if absent or a directory."""
        path = self._path(key)
        with map_os_errors("size", key):
            st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise NotFound(f"object not found: {key}")
        return st.st_size

    def stat(self, key: str) -> ObjectStat:
        """The file's length and modification time; NotFound if absent or a directory."""
        path = self._path(key)
        with map_os_errors("stat", key):
            st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise NotFound(f"object not found: {key}")
        return ObjectStat(size=st.st_size, modified_ms=st.st_mtime_ns // 1_000_000)

    def exists(self, key: str) -> bool:
        """Whether a regular file is stored under the key."""
        path = self._path(key)
        with map_os_errors("exists", key):
            return path.is_file()

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Hard-link a complete temporary file to the key; link() refuses an existing name."""
        path = self._path(key)
        with map_os_errors("put_if_absent", key):
            tmp = self._write_temp(path.parent, data)
            try:
                with self._locked():
                    os.link(tmp, path)
            except FileExistsError:
                if path.is_dir():
                    raise
                return False
            finally:
                tmp.unlink()
            fsync_path(path.parent)
            return True

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        """The file and the hash of exactly the bytes read."""
        data = self.get(key)
        return data, content_etag(data)

    def put_if_match(self, key: str, data: bytes, etag: str) -> bool:
        """Compare the current file's hash and rename over it, both under the store lock."""
        path = self._path(key)
        with map_os_errors("put_if_match", key):
            tmp = self._write_temp(path.parent, data)
            try:
                with self._locked():
                    if not self._matches(path, etag):
                        return False
                    os.replace(tmp, path)
            finally:
                with suppress(FileNotFoundError):
                    tmp.unlink()
            fsync_path(path.parent)
            return True

    def close(self) -> None:
        """Close the lock file; idempotent."""
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise commits with every thread and process writing under this root.

        Data is written and fsynced before the lock is taken, so it is held only for a
        rename or a compare; that is what makes put_if_match a true compare-and-swap.
        """
        with self._thread_lock:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    @staticmethod
    def _matches(path: Path, etag: str) -> bool:
        try:
            return content_etag(path.read_bytes()) == etag
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return False

    def _write_temp(self, directory: Path, source: bytes | Path) -> Path:
        """A fsynced temporary file in `directory` (made if missing) holding `source`:
        the bytes, or a copy of the file."""
        tmp, fd = self._create_temp(directory)
        try:
            with open(fd, "wb") as f:
                if isinstance(source, Path):
                    with source.open("rb") as src:
                        shutil.copyfileobj(src, f, COPY_BUFFER_BYTES)
                else:
                    f.write(source)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            tmp.unlink()
            raise
        return tmp

    def _create_temp(self, directory: Path) -> tuple[Path, int]:
        attempts_left = _DIR_RACE_ATTEMPTS
        while True:
            self._make_dirs(directory)
            tmp = directory / f"{TMP_PREFIX}{uuid.uuid4().hex}"
            try:
                return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            except FileNotFoundError:
                attempts_left -= 1
                if not attempts_left:
                    raise

    def _make_dirs(self, directory: Path) -> None:
        """mkdir -p that fsyncs each parent it adds an entry to, so the path survives a crash."""
        missing: builtins.list[Path] = []
        while not directory.exists():
            missing.append(directory)
            directory = directory.parent
        for path in reversed(missing):
            try:
                path.mkdir()
            except FileExistsError:
                continue  # a concurrent put made it
            fsync_path(path.parent)

    def _remove_empty_dirs(self, directory: Path) -> None:
        """rmdir up towards the root while empty, so listings do not walk dead branches."""
        while directory != self.root:
            try:
                directory.rmdir()
            except OSError:
                return  # not empty (or already gone): the usual, harmless end
            directory = directory.parent


def _raise_unless_gone(exc: OSError) -> None:
    """os.walk's error hook: a directory that vanished mid-walk is just empty."""
    if not isinstance(exc, FileNotFoundError | NotADirectoryError):
        raise exc
