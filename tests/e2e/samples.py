"""Samples as the e2e tests compare them: label sets, float64 bit patterns, stored data.

Values are compared as their 64 bits (`values.view(np.uint64)`), never as floats: NaN
payloads, the staleness marker and -0.0 must come back exactly.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tests.support.values import STALE_NAN

LabelSet = tuple[tuple[str, str], ...]
"""A series' labels as (name, value) pairs sorted by name, `__name__` included."""

Stored = dict[LabelSet, tuple[npt.NDArray[np.int64], npt.NDArray[np.uint64]]]
"""One tenant's series -> (timestamps in ms, value bits), as read back from a data dir."""

STALE_NAN_BITS = STALE_NAN
"""Prometheus's staleness marker: a NaN with this exact payload."""

_DOUBLE = struct.Struct("<d")
_UINT64 = struct.Struct("<Q")


def float_bits(value: float) -> int:
    """The 64 bits of a float64."""
    bits: int = _UINT64.unpack(_DOUBLE.pack(value))[0]
    return bits


def bits_float(bits: int) -> float:
    """The float64 with these 64 bits (NaN payloads kept)."""
    value: float = _DOUBLE.unpack(_UINT64.pack(bits))[0]
    return value


def labelset(labels: dict[str, str]) -> LabelSet:
    """A label dict as a LabelSet."""
    return tuple(sorted(labels.items()))


def read_stored(data_dir: Path) -> dict[str, Stored]:
    """tenant -> series of a stopped server's data dir, replayed as a restart would."""
    from gateway.inspect import read_samples

    out: dict[str, Stored] = {}
    for tenant, series in read_samples(data_dir).items():
        out[tenant] = {
            labels: (
                np.asarray(ts, dtype=np.int64),
                np.asarray(values, dtype=np.float64).view(np.uint64),
            )
            for labels, (ts, values) in series.items()
        }
    return out


def count_samples(stored: Stored) -> int:
    """Samples across all series of one tenant."""
    return sum(len(ts) for ts, _ in stored.values())
