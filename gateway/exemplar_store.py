"""Exemplars per tenant: a bounded ring in memory, an append-only log on disk.

Each tenant keeps at most `max_per_tenant` exemplars (the oldest go first) for
`retention_ms` of exemplar time. Every accepted exemplar is appended to
`<data_dir>/exemplars/<tenant>.log` as one line, `CRC32-hex SP JSON LF`, and fsynced
before the request is answered; at start the log is read back up to its first torn or
damaged line (a crash mid-append), which is cut off. Once a log holds twice the ring
it is rewritten from memory (temporary file, fsync, rename). Format and guarantees:
docs/metadata-exemplars.md.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import sys
import threading
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.metadata_store import write_atomically

log = logging.getLogger(__name__)

EXEMPLARS_DIRNAME = "exemplars"
LOG_SUFFIX = ".log"

LabelPairs = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Exemplar:
    """One exemplar with the labels of its series; `value_bits` keeps NaN payloads."""

    series: LabelPairs
    labels: LabelPairs
    timestamp: int
    value_bits: int

    @property
    def value(self) -> float:
        """The value as a float."""
        number: float = struct.unpack("<d", struct.pack("<Q", self.value_bits))[0]
        return number

    def to_line(self) -> bytes:
        """The exemplar as one log line: CRC32 of the JSON in hex, a space, the JSON."""
        body = json.dumps(
            {"s": self.series, "l": self.labels, "t": self.timestamp, "v": self.value_bits},
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode()
        return b"%08x %s\n" % (zlib.crc32(body), body)

    @classmethod
    def from_line(cls, line: bytes) -> Exemplar | None:
        """The exemplar of a whole, undamaged log line; None otherwise."""
        if len(line) < 10 or not line.endswith(b"\n") or line[8:9] != b" ":
            return None
        body = line[9:-1]
        try:
            if int(line[:8], 16) != zlib.crc32(body):
                return None
            item = json.loads(body)
            return cls(
                series=tuple((str(n), str(v)) for n, v in item["s"]),
                labels=tuple((str(n), str(v)) for n, v in item["l"]),
                timestamp=int(item["t"]),
                value_bits=int(item["v"]),
            )
        except (ValueError, KeyError, TypeError):
            return None


class TenantExemplars:
    """One tenant's ring; each exemplar once (a resend finds the one it sent). Exemplars
    of one series share one copy of its labels (most of an exemplar's memory)."""

    def __init__(self, capacity: int) -> None:
        self.ring: deque[Exemplar] = deque()
        self.present: set[Exemplar] = set()
        self.capacity = capacity
        self.logged_lines = 0
        self._series: dict[LabelPairs, list[Any]] = {}  # labels -> [shared labels, users]

    def add(self, exemplar: Exemplar) -> bool:
        """Keep `exemplar`; False if it is already kept."""
        if exemplar in self.present:
            return False
        if len(self.ring) >= self.capacity:
            self._drop(self.ring.popleft())
        shared = self._series.get(exemplar.series)
        if shared is None:
            shared = self._series[exemplar.series] = [exemplar.series, 0]
        shared[1] += 1
        labels = tuple((sys.intern(name), value) for name, value in exemplar.labels)
        kept = Exemplar(shared[0], labels, exemplar.timestamp, exemplar.value_bits)
        self.ring.append(kept)
        self.present.add(kept)
        return True

    def _drop(self, exemplar: Exemplar) -> None:
        self.present.discard(exemplar)
        shared = self._series[exemplar.series]
        shared[1] -= 1
        if not shared[1]:
            del self._series[exemplar.series]

    def expire(self, cutoff_ms: int) -> None:
        """Drop exemplars older than `cutoff_ms` from the old end of the ring (arrival
        order follows time closely; stragglers are left out of answers by time)."""
        while self.ring and self.ring[0].timestamp < cutoff_ms:
            self._drop(self.ring.popleft())


class ExemplarStore:
    """Exemplars of every tenant, persisted to `directory` (None: memory only)."""

    def __init__(
        self,
        directory: Path | None,
        *,
        retention_ms: int,
        max_per_tenant: int,
        fsync: bool = True,
    ) -> None:
        self.directory = directory
        self.retention_ms = retention_ms
        self.max_per_tenant = max_per_tenant
        self.fsync = fsync
        self.tenants: dict[str, TenantExemplars] = {}
        self._rewrite: set[str] = set()
        self._lock = threading.Lock()

    def tenant(self, tenant: str) -> TenantExemplars:
        """The tenant's ring, made on first use."""
        found = self.tenants.get(tenant)
        if found is None:
            found = self.tenants[tenant] = TenantExemplars(self.max_per_tenant)
        return found

    def load(self, now_ms: int) -> int:
        """Read every tenant's log (cutting torn tails off); exemplars kept."""
        if self.directory is None or not self.directory.is_dir():
            return 0
        count = 0
        for path in sorted(self.directory.glob("*" + LOG_SUFFIX)):
            tenant = path.name.removesuffix(LOG_SUFFIX)
            ring = self.tenant(tenant)
            good_bytes = 0
            with open(path, "rb") as log_file:
                for line in log_file:
                    exemplar = Exemplar.from_line(line)
                    if exemplar is None:
                        break
                    good_bytes += len(line)
                    ring.add(exemplar)
                    ring.logged_lines += 1
            if good_bytes != path.stat().st_size:
                log.warning(
                    "exemplar log damaged, tail cut path=%s kept_bytes=%d", path, good_bytes
                )
                os.truncate(path, good_bytes)
            ring.expire(now_ms - self.retention_ms)
            count += len(ring.ring)
        return count

    def add(self, tenant: str, exemplars: Sequence[Exemplar], now_ms: int) -> list[Exemplar]:
        """Keep what is new of `exemplars`; the new ones, to be logged with `log`."""
        ring = self.tenant(tenant)
        ring.expire(now_ms - self.retention_ms)
        return [exemplar for exemplar in exemplars if ring.add(exemplar)]

    def mark_unlogged(self, tenant: str) -> None:
        """Exemplars kept in memory missed the log (their request failed before it): the
        next `log` of the tenant rewrites it whole, so a resend of them is durable."""
        if self.directory is not None:
            self._rewrite.add(tenant)

    def needs_log(self, tenant: str, exemplars: Sequence[Exemplar]) -> bool:
        """Whether `log` has anything to do (new exemplars, or a log to repair)."""
        return self.directory is not None and bool(exemplars or tenant in self._rewrite)

    def log(self, tenant: str, exemplars: Sequence[Exemplar]) -> None:
        """Append exemplars to the tenant's log and make them durable (blocking: call from
        a thread). OSError when the disk refuses; the next call then rewrites the log."""
        if self.directory is None or not self.needs_log(tenant, exemplars):
            return
        with self._lock:
            ring = self.tenant(tenant)
            path = self.directory / f"{tenant}{LOG_SUFFIX}"
            try:
                if (
                    tenant in self._rewrite
                    or ring.logged_lines + len(exemplars) > 2 * ring.capacity
                ):
                    self._rewrite_log(path, ring)
                else:
                    self._append(path, exemplars)
                    ring.logged_lines += len(exemplars)
            except OSError:
                # The ring has them already: a rewrite from it repairs the log.
                self._rewrite.add(tenant)
                raise
            self._rewrite.discard(tenant)

    def _append(self, path: Path, exemplars: Sequence[Exemplar]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        created = not path.exists()
        with open(path, "ab") as out:
            out.write(b"".join(exemplar.to_line() for exemplar in exemplars))
            out.flush()
            if self.fsync:
                os.fsync(out.fileno())
        if created and self.fsync:
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _rewrite_log(self, path: Path, ring: TenantExemplars) -> None:
        # list() copies the ring in one step the event loop cannot interleave with.
        kept = list(ring.ring)
        write_atomically(path, b"".join(exemplar.to_line() for exemplar in kept))
        ring.logged_lines = len(kept)

    def select(
        self,
        tenant: str,
        accepts: Callable[[LabelPairs], bool],
        mint: int,
        maxt: int,
        now_ms: int,
    ) -> Iterator[tuple[LabelPairs, list[Exemplar]]]:
        """Series whose labels `accepts`, with their exemplars in [mint, maxt] within
        retention, oldest first; series in label order."""
        ring = self.tenants.get(tenant)
        if ring is None:
            return
        mint = max(mint, now_ms - self.retention_ms)
        found: dict[LabelPairs, list[Exemplar]] = {}
        verdicts: dict[LabelPairs, bool] = {}
        for exemplar in ring.ring:
            if not mint <= exemplar.timestamp <= maxt:
                continue
            verdict = verdicts.get(exemplar.series)
            if verdict is None:
                verdict = verdicts[exemplar.series] = accepts(exemplar.series)
            if verdict:
                found.setdefault(exemplar.series, []).append(exemplar)
        for series in sorted(found):
            yield series, sorted(found[series], key=lambda e: e.timestamp)
