"""Metric metadata (type, unit, help) per tenant and metric name, kept across restarts.

Each tenant's metadata is one JSON document, `<data_dir>/metadata/<tenant>.json`,
replaced atomically (written to a temporary file, fsynced, renamed) whenever a metric
is new or its type, unit or help changed; "last seen" times ride along with those
writes and the final one at shutdown. Senders repeat metadata (Prometheus every minute
with 1.0, with every series with 2.0), so what a crash can cost is last-seen times.
A copy merged over every gateway's goes to the bucket, `<tenant>/metric-metadata.json`,
for processes without the gateway's disk (the compactor: `read_bucket_metadata`;
`strata query`'s /api/v1/metadata: `BucketMetadata`).
Format and limits: docs/metadata-exemplars.md.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blocks.errors import NotFound, StorageError
from blocks.objstore.base import ObjectStore
from gateway.decode import MetricMetadata

log = logging.getLogger(__name__)

METADATA_DIRNAME = "metadata"
FORMAT_VERSION = 1
# The types whose samples only go up (resets aside): what the compactor asks about.
COUNTER_TYPES = frozenset({"counter"})
# The bucket copy, beside the tenant's bucket index (no block prefix: listings skip it).
BUCKET_OBJECT = "metric-metadata.json"
# A changed tenant is copied to the bucket at most this often; an unchanged one this
# often anyway, so a copy lost to a racing gateway comes back.
BUCKET_MIN_INTERVAL_S = 60.0
BUCKET_MAX_INTERVAL_S = 600.0
CAS_ATTEMPTS = 8
CAS_PAUSE_S = 0.05


@dataclass(slots=True)
class MetadataRecord:
    """What is known about one metric of one tenant."""

    type: str
    unit: str
    help: str
    last_seen_ms: int

    def to_json(self) -> dict[str, Any]:
        """The record as the tenant's JSON document holds it."""
        return {
            "type": self.type,
            "unit": self.unit,
            "help": self.help,
            "lastSeenMs": self.last_seen_ms,
        }


@dataclass(slots=True)
class MetadataUpdate:
    """What one request's metadata did: entries stored, entries refused by reason, and
    whether the tenant's document changed (then it has to be written)."""

    stored: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    changed: bool = False


Records = dict[str, MetadataRecord]


def encode_document(tenant: str, records: Iterable[tuple[str, MetadataRecord]]) -> bytes:
    """A tenant's metadata as its JSON document."""
    document = {
        "version": FORMAT_VERSION,
        "tenant": tenant,
        "metrics": {name: record.to_json() for name, record in sorted(records)},
    }
    return json.dumps(document).encode()


def decode_document(data: bytes) -> tuple[str, Records]:
    """(tenant, records) of a JSON document; ValueError if it is not one."""
    try:
        document = json.loads(data)
        if document["version"] != FORMAT_VERSION:
            raise ValueError(f"version {document['version']!r}")
        records = {
            str(name): MetadataRecord(
                str(entry["type"]),
                str(entry["unit"]),
                str(entry["help"]),
                int(entry["lastSeenMs"]),
            )
            for name, entry in document["metrics"].items()
        }
        return str(document["tenant"]), records
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a metadata document: {exc!r}") from None


def bucket_key(tenant: str) -> str:
    """The object holding a tenant's metadata in the bucket."""
    return f"{tenant}/{BUCKET_OBJECT}"


def read_bucket_metadata(store: ObjectStore, tenant: str) -> Records:
    """A tenant's metadata as the gateways copied it to the bucket ({} if none or
    unreadable): for the compactor, e.g. `is_counter(read_bucket_metadata(s, t), m)`."""
    try:
        return decode_document(store.get(bucket_key(tenant)))[1]
    except NotFound:
        return {}
    except ValueError as exc:
        log.warning("bucket metadata unreadable tenant=%s error=%s", tenant, exc)
        return {}


def is_counter(records: Records, metric: str) -> bool:
    """Whether `metric` was described as a counter (one never described is not)."""
    record = records.get(metric)
    return record is not None and record.type in COUNTER_TYPES


def query_records(
    metrics: Records, metric: str | None, limit: int, limit_per_metric: int
) -> dict[str, list[dict[str, str]]]:
    """Prometheus's /api/v1/metadata `data` of a tenant's records: metric -> [{type, help,
    unit}], by name; `limit` metrics at most and `limit_per_metric` entries each (<= 0:
    no limit)."""
    names = sorted(metrics) if metric is None else [metric] if metric in metrics else []
    if limit > 0:
        names = names[:limit]
    out: dict[str, list[dict[str, str]]] = {}
    for name in names:
        record = metrics[name]
        entries = [{"type": record.type, "help": record.help, "unit": record.unit}]
        out[name] = entries[:limit_per_metric] if limit_per_metric > 0 else entries
    return out


def merge_records(ours: Records, theirs: Records, limit: int) -> Records:
    """Both gateways' records, the most recently seen winning; the `limit` most recently
    seen metrics at most."""
    merged = dict(theirs)
    for name, record in ours.items():
        other = merged.get(name)
        if other is None or record.last_seen_ms >= other.last_seen_ms:
            merged[name] = record
    if len(merged) > limit:
        newest = sorted(merged.items(), key=lambda item: item[1].last_seen_ms, reverse=True)
        merged = dict(newest[:limit])
    return merged


class MetadataStore:
    """Per-tenant metric metadata in memory, persisted to `directory` (None: memory only)."""

    def __init__(self, directory: Path | None, *, max_metrics_per_tenant: int) -> None:
        self.directory = directory
        self.max_metrics_per_tenant = max_metrics_per_tenant
        self.tenants: dict[str, Records] = {}
        self._dirty: set[str] = set()
        self._write_lock = threading.Lock()
        # Bucket copies: tenants changed since their last copy, and when that was.
        self._bucket_dirty: set[str] = set()
        self._copied_at: dict[str, float] = {}
        self._copying: set[str] = set()

    def load(self) -> int:
        """Read every tenant's document; the number of metrics read. A document that
        cannot be read is logged and left out (senders send metadata again)."""
        if self.directory is None or not self.directory.is_dir():
            return 0
        count = 0
        for path in sorted(self.directory.glob("*.json")):
            try:
                tenant, records = decode_document(path.read_bytes())
            except (OSError, ValueError) as exc:
                log.warning("metadata file unreadable path=%s error=%s", path, exc)
                continue
            self.tenants[tenant] = records
            self._bucket_dirty.add(tenant)
            count += len(records)
        return count

    def update(self, tenant: str, entries: Iterable[MetricMetadata], now_ms: int) -> MetadataUpdate:
        """Record what a request says about its metrics."""
        update = MetadataUpdate()
        metrics = self.tenants.setdefault(tenant, {})
        for entry in entries:
            if not entry.metric:
                update.refused["missing_metric_name"] += 1
                continue
            record = metrics.get(entry.metric)
            if record is None:
                if len(metrics) >= self.max_metrics_per_tenant:
                    update.refused["max_metadata_per_tenant"] += 1
                    continue
                metrics[entry.metric] = MetadataRecord(entry.type, entry.unit, entry.help, now_ms)
                update.changed = True
            elif (record.type, record.unit, record.help) != (entry.type, entry.unit, entry.help):
                record.type, record.unit, record.help = entry.type, entry.unit, entry.help
                record.last_seen_ms = now_ms
                update.changed = True
            else:
                record.last_seen_ms = max(record.last_seen_ms, now_ms)
            update.stored += 1
        if update.changed:
            self._dirty.add(tenant)
            self._bucket_dirty.add(tenant)
        return update

    def persist(self, tenant: str) -> None:
        """Write the tenant's document if it changed since last written (blocking: call
        from a thread). OSError when the disk refuses."""
        if self.directory is None or tenant not in self._dirty:
            return
        with self._write_lock:
            self._dirty.discard(tenant)
            # list() copies in one step the event loop cannot interleave with; a record
            # changed while it is written is marked dirty again and written next time.
            records = list(self.tenants.get(tenant, {}).items())
            try:
                write_atomically(
                    self.directory / f"{tenant}.json", encode_document(tenant, records)
                )
            except OSError:
                self._dirty.add(tenant)
                raise

    def persist_all(self) -> None:
        """Write every document with changes (at shutdown: last-seen times included)."""
        self._dirty.update(self.tenants)
        for tenant in list(self.tenants):
            self.persist(tenant)

    def copy_due(self, tenant: str, now_s: float) -> bool:
        """Whether the tenant's bucket copy should be refreshed now (and is not already
        being refreshed); marks it as being refreshed when it should."""
        if tenant in self._copying or tenant not in self.tenants:
            return False
        since = now_s - self._copied_at.get(tenant, -BUCKET_MAX_INTERVAL_S)
        due = since >= BUCKET_MAX_INTERVAL_S or (
            tenant in self._bucket_dirty and since >= BUCKET_MIN_INTERVAL_S
        )
        if due:
            self._copying.add(tenant)
        return due

    def copy_to_bucket(self, store: ObjectStore, tenant: str) -> None:
        """Merge the tenant's records into its bucket copy by compare-and-swap (blocking:
        call from a thread). StorageError when the store fails or racing writers keep
        winning; the next due copy tries again."""
        try:
            self._bucket_dirty.discard(tenant)
            self._copied_at[tenant] = time.monotonic()
            ours = dict(list(self.tenants.get(tenant, {}).items()))
            key = bucket_key(tenant)
            for attempt in range(CAS_ATTEMPTS):
                try:
                    data, etag = store.get_with_etag(key)
                    theirs = decode_document(data)[1]
                except NotFound:
                    data, etag, theirs = b"", "", {}
                except ValueError as exc:
                    log.warning(
                        "bucket metadata unreadable, replaced tenant=%s error=%s", tenant, exc
                    )
                    theirs = {}
                merged = merge_records(ours, theirs, self.max_metrics_per_tenant)
                payload = encode_document(tenant, merged.items())
                if payload == data:
                    return
                written = (
                    store.put_if_match(key, payload, etag)
                    if etag
                    else store.put_if_absent(key, payload)
                )
                if written:
                    return
                time.sleep(random.uniform(0, CAS_PAUSE_S * (attempt + 1)))
            raise StorageError(
                "update", key, f"lost the compare-and-swap race {CAS_ATTEMPTS} times"
            )
        except BaseException:
            self._bucket_dirty.add(tenant)
            raise
        finally:
            self._copying.discard(tenant)

    def copy_all_to_bucket(self, store: ObjectStore) -> None:
        """Copy every tenant with changes to the bucket (at shutdown); failures logged."""
        for tenant in sorted(self._bucket_dirty & set(self.tenants)):
            try:
                self.copy_to_bucket(store, tenant)
            except StorageError as exc:
                log.warning("metadata not copied to the bucket tenant=%s error=%s", tenant, exc)

    def metric_type(self, tenant: str, metric: str) -> str | None:
        """The type a tenant's senders last gave for `metric`; None if never described."""
        record = self.tenants.get(tenant, {}).get(metric)
        return None if record is None else record.type

    def is_counter(self, tenant: str, metric: str) -> bool:
        """Whether `metric` of `tenant` was described as a counter (a metric never
        described is not taken for one)."""
        return is_counter(self.tenants.get(tenant, {}), metric)

    def query(
        self, tenant: str, metric: str | None, limit: int, limit_per_metric: int
    ) -> dict[str, list[dict[str, str]]]:
        """Prometheus's /api/v1/metadata `data` for a tenant (`query_records`)."""
        return query_records(self.tenants.get(tenant, {}), metric, limit, limit_per_metric)


class BucketMetadata:
    """Tenants' metadata as the bucket copies hold them, for a process without a gateway's
    disk (`strata query`): a tenant's copy is one small GET, fetched again once older than
    `refresh_s` (as the querier's bucket indexes are), so requests in between cost none."""

    def __init__(self, store: ObjectStore, *, refresh_s: float) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self._entries: dict[str, tuple[Records, float]] = {}
        self._lock = threading.Lock()

    def records(self, tenant: str) -> Records:
        """The tenant's records as of at most `refresh_s` ago ({} without a copy); blocking:
        call from a thread. StorageError when the bucket cannot be read."""
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(tenant)
        if entry is not None and now - entry[1] < self.refresh_s:
            return entry[0]
        records = read_bucket_metadata(self.store, tenant)
        with self._lock:
            # Expired entries serve nobody: dropping them bounds the cache by the tenants
            # asked about within one refresh interval, whatever tenant ids clients send.
            self._entries = {
                name: kept for name, kept in self._entries.items() if now - kept[1] < self.refresh_s
            }
            self._entries[tenant] = (records, now)
        return records

    def query(
        self, tenant: str, metric: str | None, limit: int, limit_per_metric: int
    ) -> dict[str, list[dict[str, str]]]:
        """Prometheus's /api/v1/metadata `data` for a tenant (`query_records`); blocking."""
        return query_records(self.records(tenant), metric, limit, limit_per_metric)

    def __len__(self) -> int:
        """Tenants held."""
        return len(self._entries)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` by `data` so that a crash leaves the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    # The rename is durable only once the directory is.
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
