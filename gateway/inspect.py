"""Reading a stopped gateway's data, exactly as a restart would see it: WAL, queue, bucket.

Samples may stand in several places at once (a block uploaded while its WAL segments
were not yet removed, or re-cut after a crash); each (series, timestamp) counts once.
Native histograms are read back the same way by `read_histograms`, start timestamps of
float samples by `read_starts`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from blocks.catalog import bucket_tenants
from blocks.objstore.base import ObjectStore
from blocks.objstore.factory import open_store
from blocks.objstore.local import LocalStore
from blocks.reader import BlockReader
from blocks.start_store import StartPart, merge_start_parts
from blocks.upload import list_blocks
from gateway.config import GatewayConfig
from gateway.head import Head
from gateway.shipper import queued_blocks
from gateway.validate import decode_labels
from gateway.wal_replay import replay

LabelSet = tuple[tuple[str, str], ...]
Parts = dict[str, dict[LabelSet, list[tuple[np.ndarray, np.ndarray]]]]
HistogramParts = dict[str, dict[LabelSet, list[tuple[np.ndarray, list[bytes]]]]]


def read_samples(
    data_dir: Path, bucket_url: str = ""
) -> dict[str, dict[LabelSet, tuple[np.ndarray, np.ndarray]]]:
    """tenant -> labels (sorted pairs) -> (timestamps, values); no data file is changed.

    (Opening the queue and a local bucket as stores creates their lock file.)
    """
    config = GatewayConfig(data_dir=data_dir, bucket_url=bucket_url)
    parts: Parts = {}
    head = Head(max_bytes=1 << 62, freeze_samples=config.head_freeze_samples)
    replay(config.wal_dir, head, repair=False)
    for tenant, tenant_head in head.tenants.items():
        for labels, ts, values in tenant_head.series_samples():
            parts.setdefault(tenant, {}).setdefault(tuple(decode_labels(labels)), []).append(
                (ts, values)
            )
    if config.upload_dir.is_dir():
        queue = LocalStore(config.upload_dir)
        for tenant, block_dir in queued_blocks(config.upload_dir):
            _add_block(parts, queue, tenant, block_dir.name)
    with open_store(config.bucket) as bucket:
        for tenant in bucket_tenants(bucket):
            for block_id in list_blocks(bucket, tenant):
                _add_block(parts, bucket, tenant, block_id)
    return {tenant: {k: _merge(v) for k, v in series.items()} for tenant, series in parts.items()}


def _add_block(parts: Parts, store: ObjectStore, tenant: str, block_id: str) -> None:
    reader = BlockReader(store, f"{tenant}/{block_id}")
    count = reader.index.series_count
    data = reader.read_series(range(count), -(2**63), 2**63 - 1)
    for series in range(count):
        if not len(data[series][0]):
            continue  # a series of histograms only (read_histograms has it)
        labels = tuple(reader.index.labels(series))
        parts.setdefault(tenant, {}).setdefault(labels, []).append(data[series])


def _merge(pieces: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    ts = np.concatenate([p[0] for p in pieces])
    values = np.concatenate([p[1] for p in pieces])
    order = np.argsort(ts, kind="stable")
    ts, values = ts[order], values[order]
    first = np.ones(len(ts), dtype=bool)
    first[1:] = ts[1:] != ts[:-1]
    return ts[first], values[first]


def read_histograms(
    data_dir: Path, bucket_url: str = ""
) -> dict[str, dict[LabelSet, tuple[np.ndarray, list[bytes]]]]:
    """tenant -> labels -> (timestamps, canonical Histogram messages), as `read_samples`."""
    config = GatewayConfig(data_dir=data_dir, bucket_url=bucket_url)
    parts: HistogramParts = {}
    head = Head(max_bytes=1 << 62, freeze_samples=config.head_freeze_samples)
    replay(config.wal_dir, head, repair=False)
    for tenant, tenant_head in head.tenants.items():
        for canonical, part in tenant_head.series_histograms():
            key = tuple(decode_labels(canonical))
            parts.setdefault(tenant, {}).setdefault(key, []).append(part)
    stores: list[tuple[ObjectStore, str, str]] = []
    if config.upload_dir.is_dir():
        queue = LocalStore(config.upload_dir)
        stores += [(queue, t, d.name) for t, d in queued_blocks(config.upload_dir)]
    with open_store(config.bucket) as bucket:
        for tenant in bucket_tenants(bucket):
            stores += [(bucket, tenant, block_id) for block_id in list_blocks(bucket, tenant)]
        for store, tenant, block_id in stores:
            reader = BlockReader(store, f"{tenant}/{block_id}")
            count = reader.index.series_count
            data = reader.read_histograms(range(count), -(2**63), 2**63 - 1)
            for series in range(count):
                if len(data[series][0]):
                    labels = tuple(reader.index.labels(series))
                    parts.setdefault(tenant, {}).setdefault(labels, []).append(data[series])
    return {
        tenant: {k: _merge_histograms(v) for k, v in series.items()}
        for tenant, series in parts.items()
    }


def read_starts(data_dir: Path, bucket_url: str = "") -> dict[str, dict[LabelSet, StartPart]]:
    """tenant -> labels -> (sample timestamps, start timestamps) of every start-timestamp
    event: the blocks of bucket and queue by id, then the WAL's head, later ones winning a
    sample timestamp (querier/start_times.py)."""
    from querier.start_times import block_starts, head_starts  # the querier builds on gateway

    config = GatewayConfig(data_dir=data_dir, bucket_url=bucket_url)
    parts: dict[str, dict[LabelSet, list[StartPart]]] = {}
    stores: list[tuple[ObjectStore, str, str]] = []
    everything = -(2**63), 2**63 - 1
    with open_store(config.bucket) as bucket:
        for tenant in bucket_tenants(bucket):
            stores += [(bucket, tenant, block_id) for block_id in list_blocks(bucket, tenant)]
        if config.upload_dir.is_dir():
            queue = LocalStore(config.upload_dir)
            stores += [(queue, t, d.name) for t, d in queued_blocks(config.upload_dir)]
        for store, tenant, block_id in sorted(stores, key=lambda s: s[2]):  # oldest first
            index = BlockReader(store, f"{tenant}/{block_id}").index
            for labels, part in block_starts(index, [], *everything).items():
                parts.setdefault(tenant, {}).setdefault(labels, []).append(part)
    head = Head(max_bytes=1 << 62, freeze_samples=config.head_freeze_samples)
    replay(config.wal_dir, head, repair=False)
    for tenant, tenant_head in head.tenants.items():
        for labels, part in head_starts(tenant_head, [], *everything).items():
            parts.setdefault(tenant, {}).setdefault(labels, []).append(part)
    return {
        tenant: {k: merge_start_parts(v, *everything) for k, v in sorted(series.items())}
        for tenant, series in parts.items()
    }


def _merge_histograms(
    pieces: list[tuple[np.ndarray, list[bytes]]],
) -> tuple[np.ndarray, list[bytes]]:
    ts = np.concatenate([p[0] for p in pieces])
    payloads = [m for p in pieces for m in p[1]]
    order = np.argsort(ts, kind="stable")
    ts = ts[order]
    first = np.ones(len(ts), dtype=bool)
    first[1:] = ts[1:] != ts[:-1]
    return ts[first], [payloads[i] for i in order[first].tolist()]
