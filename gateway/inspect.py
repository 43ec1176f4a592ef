"""Reading a stopped gateway's data directory, exactly as a restart would see it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gateway.config import GatewayConfig
from gateway.head import Head
from gateway.validate import decode_labels
from gateway.wal_replay import replay

LabelSet = tuple[tuple[str, str], ...]


def read_samples(data_dir: Path) -> dict[str, dict[LabelSet, tuple[np.ndarray, np.ndarray]]]:
    """tenant -> labels (sorted pairs) -> (timestamps, values), without changing any file."""
    defaults = GatewayConfig(data_dir=data_dir)
    head = Head(max_bytes=1 << 62, freeze_samples=defaults.head_freeze_samples)
    replay(defaults.wal_dir, head, repair=False)
    out: dict[str, dict[LabelSet, tuple[np.ndarray, np.ndarray]]] = {}
    for tenant, tenant_head in head.tenants.items():
        series = out.setdefault(tenant, {})
        for labels, ts, values in tenant_head.series_samples():
            series[tuple(decode_labels(labels))] = (ts, values)
    return out
