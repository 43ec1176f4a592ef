"""Write-ahead log: framed, checksummed records in segment files, fsynced in groups.

Requests hand their record bytes to `submit`; one writer thread appends everything
pending, fsyncs once and then answers every request of that group, so concurrent
requests share an fsync. Layout and guarantees in docs/wal.md.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import google_crc32c

from blocks.errors import StorageError, Unavailable
from blocks.failpoints import failpoint
from blocks.fsync import fsync_path
from gateway.metrics import GatewayMetrics

log = logging.getLogger(__name__)

SEGMENT_MAGIC = b"STRATAWL"
SEGMENT_VERSION = 1
# magic, format version, reserved
SEGMENT_HEADER = struct.Struct(">8sII")
# payload length, CRC32C (Castagnoli) of the payload
FRAME = struct.Struct(">II")
# A record larger than this is not something Strata writes: a length above it is corruption.
MAX_RECORD_BYTES = 1 << 30
# The smallest payload Strata writes (type, tenant length, count): a shorter frame, such
# as an all-zero one whose checksum of nothing is 0, is damage.
MIN_RECORD_BYTES = 6
# A test hook, off unless this variable names a file: while that file exists, every WAL
# write stops halfway and fails with ENOSPC, as on a full disk (docs/durability.md).
DISK_FULL_FLAG_ENV = "STRATA_TEST_WAL_DISK_FULL_FLAG"


def frame(payload: bytes) -> bytes:
    """A payload with its length and checksum in front."""
    return FRAME.pack(len(payload), google_crc32c.value(payload)) + payload


def segment_path(wal_dir: Path, number: int) -> Path:
    """Segment files are named by their sequence number, so names sort in log order."""
    return wal_dir / f"{number:08d}"


def list_segments(wal_dir: Path) -> list[tuple[int, Path]]:
    """The segment files of a WAL directory, oldest first."""
    if not wal_dir.is_dir():
        return []
    found = [(int(p.name), p) for p in wal_dir.iterdir() if p.name.isdigit() and p.is_file()]
    return sorted(found)


@dataclass(slots=True)
class _Pending:
    data: bytes | None  # None: start a new segment here, for `generation`
    future: Future[None] | None
    generation: int = -1


class WAL:
    """An append-only log of records; `submit` answers once the record is durable."""

    def __init__(
        self, wal_dir: Path, *, segment_bytes: int, fsync: bool, metrics: GatewayMetrics
    ) -> None:
        self.wal_dir = wal_dir
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.metrics = metrics
        # Bumped whenever records start going to a new segment: records encoded for an
        # older generation may refer to series defined only in an older segment.
        self.generation = 0
        self._cond = threading.Condition()
        self._pending: list[_Pending] = []
        self._enqueued_bytes = 0
        self._closing = False
        self._fd: int | None = None
        self._segment = 0
        self._good_offset = 0
        self._thread: threading.Thread | None = None
        # generation -> number of the first segment holding its records
        self._first_segment: dict[int, int] = {}
        flag = os.environ.get(DISK_FULL_FLAG_ENV, "")
        self._disk_full_flag = Path(flag) if flag else None

    def start(self) -> None:
        """Start the writer; the first write opens a segment after all existing ones."""
        self.wal_dir.mkdir(parents=True, exist_ok=True)
        existing = list_segments(self.wal_dir)
        self._segment = existing[-1][0] if existing else 0
        self._thread = threading.Thread(target=self._run, name="wal-writer", daemon=True)
        self._thread.start()

    def begin(self, size_hint: int) -> int:
        """The generation to encode the next records for, rotating when the segment is full."""
        with self._cond:
            if self._enqueued_bytes and self._enqueued_bytes + size_hint > self.segment_bytes:
                self._new_generation()
            return self.generation

    def rotate(self) -> int:
        """Send everything from now on to a new segment; returns its generation.

        Segments before it can be removed with `remove_before(generation)` once all their
        samples are safe elsewhere.
        """
        with self._cond:
            self._new_generation()
            return self.generation

    def _new_generation(self) -> None:
        """Queue a segment change; records from here on belong to the next generation.

        Called with the lock held.
        """
        self.generation += 1
        self._pending.append(_Pending(None, None, self.generation))
        self._enqueued_bytes = 0
        self._cond.notify()

    def remove_before(self, generation: int) -> int:
        """Delete the segments written before `generation` started; returns how many."""
        with self._cond:
            first = self._first_segment.get(generation)
        if first is None:
            return 0
        removed = 0
        for number, path in list_segments(self.wal_dir):
            if number < first:
                path.unlink(missing_ok=True)
                removed += 1
                if removed == 1:
                    failpoint("gateway.wal.after_first_removal")
        if removed:
            fsync_path(self.wal_dir)
            log.info("wal truncated segments=%d before=%08d", removed, first)
        return removed

    def submit(self, generation: int, data: bytes) -> Future[None]:
        """Queue framed records encoded for `generation`; the future is durability."""
        future: Future[None] = Future()
        with self._cond:
            if self._closing:
                raise Unavailable("shutting down")
            if generation != self.generation:
                raise Unavailable("WAL moved to a new segment while the request was encoded")
            self._pending.append(_Pending(data, future))
            self._enqueued_bytes += len(data)
            self._cond.notify()
        return future

    def close(self) -> None:
        """Write what is pending, fsync, stop the writer and close the segment."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None

    def size(self) -> tuple[int, int]:
        """(segment files, bytes) on disk."""
        segments = list_segments(self.wal_dir)
        total = 0
        for _, path in segments:
            try:
                total += path.stat().st_size
            except FileNotFoundError:
                continue
        return len(segments), total

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending:
                    return
                batch, self._pending = self._pending, []
            self._write_batch(batch)

    def _write_batch(self, batch: list[_Pending]) -> None:
        unsynced: list[Future[None]] = []
        try:
            for item in batch:
                if item.data is None:
                    self._close_segment()
                    self._answer(unsynced)
                    unsynced = []
                    self._open_segment(item.generation)
                    continue
                if self._fd is None:
                    with self._cond:
                        generation = self.generation
                    self._open_segment(generation)
                assert self._fd is not None
                self._write_all(self._fd, item.data)
                self.metrics.wal_bytes_written.inc(len(item.data))
                if item.future is not None:
                    unsynced.append(item.future)
            if self._fd is not None and unsynced:
                if self.fsync:
                    started = time.perf_counter()
                    os.fsync(self._fd)
                    self.metrics.wal_fsync_seconds.observe(time.perf_counter() - started)
                self._good_offset = os.lseek(self._fd, 0, os.SEEK_CUR)
            self._answer(unsynced)
        except Exception as exc:
            # OSError above all (disk full, I/O error); anything else must not leave a
            # request waiting forever on a future nobody will resolve. Every request of
            # the batch not answered yet fails, whether or not its bytes were written.
            unanswered = [i.future for i in batch if i.future is not None and not i.future.done()]
            self._fail(unanswered, exc)

    def _answer(self, futures: list[Future[None]]) -> None:
        if futures:
            self.metrics.wal_group_requests.observe(len(futures))
        for future in futures:
            future.set_result(None)

    def _fail(self, futures: list[Future[None]], exc: Exception) -> None:
        """Undo a failed write, move on to a new segment, fail everything not durable."""
        self.metrics.wal_failures.inc()
        segment = segment_path(self.wal_dir, self._segment).name
        log.error("wal write failed segment=%s error=%s", segment, exc)
        if self._fd is not None:
            try:
                # Cut the partial write so the segment ends on a whole record.
                os.ftruncate(self._fd, self._good_offset)
                if self.fsync:
                    os.fsync(self._fd)
            except OSError as cut_exc:
                log.error("wal truncate failed segment=%s error=%s", segment, cut_exc)
            os.close(self._fd)
            self._fd = None
        with self._cond:
            self.generation += 1
            self._enqueued_bytes = 0
            stranded, self._pending = self._pending, []
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        error = StorageError("wal write", segment, detail)
        for item in stranded:
            if item.future is not None:
                futures.append(item.future)
        for future in futures:
            future.set_exception(error)

    def _open_segment(self, generation: int) -> None:
        self._segment += 1
        path = segment_path(self.wal_dir, self._segment)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            header = SEGMENT_HEADER.pack(SEGMENT_MAGIC, SEGMENT_VERSION, 0)
            self._write_all(fd, header)
            if self.fsync:
                os.fsync(fd)
                fsync_path(self.wal_dir)
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        self._fd = fd
        self._good_offset = SEGMENT_HEADER.size
        with self._cond:
            self._first_segment.setdefault(generation, self._segment)
        self.metrics.wal_segments_created.inc()
        log.debug("wal segment started segment=%s", path.name)

    def _write_all(self, fd: int, data: bytes) -> None:
        """Write every byte: os.write may write fewer than it is given."""
        view = memoryview(data)
        if self._disk_full_flag is not None and self._disk_full_flag.exists():
            os.write(fd, view[: len(view) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        while view:
            view = view[os.write(fd, view) :]

    def _close_segment(self) -> None:
        if self._fd is None:
            return
        if self.fsync:
            started = time.perf_counter()
            os.fsync(self._fd)
            self.metrics.wal_fsync_seconds.observe(time.perf_counter() - started)
        os.close(self._fd)
        self._fd = None
