"""Per-tenant limits: the gateway's settings as defaults, a JSON file of overrides.

`limits_file` maps tenants to the settings they change:

    {"team-a": {"ingestion_rate": 50000, "max_active_series": 200000},
     "batch":  {"max_sample_age": "7d"}}

Each rejection names the limit and its value (docs/security.md#limits): 429 for the
ingestion rate (a per-tenant rate: Prometheus may retry it, and by default drops it),
400 for data a limit makes never valid (too many active series, too old, labels too
long), 422 for queries over a query limit.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blocks.errors import StrataError
from gateway.config import ConfigError, GatewayConfig
from querier.limits import QueryLimits


class RateLimited(StrataError):
    """A tenant is over its ingestion rate: 429, the request may be sent again later."""

    http_status = 429


@dataclass(frozen=True, slots=True)
class TenantLimits:
    """The limits one tenant's requests are held to."""

    ingestion_rate: float  # samples per second; 0: no limit
    ingestion_burst: int  # samples a tenant may send at once above the rate
    max_active_series: int  # series with a sample within ACTIVE_WINDOW_MS; 0: no limit
    max_sample_age_ms: int  # samples older than this are refused; 0: no limit
    max_future_ms: int
    max_labels_per_series: int
    max_label_name_bytes: int
    max_label_value_bytes: int
    max_request_bytes: int
    max_decompressed_bytes: int
    query_max_series: int
    query_max_samples: int
    query_max_range_ms: int

    def query_limits(self, base: QueryLimits) -> QueryLimits:
        """`base` with this tenant's query limits."""
        return dataclasses.replace(
            base,
            max_series=self.query_max_series,
            max_samples=self.query_max_samples,
            max_range_ms=self.query_max_range_ms,
        )


# Settings a tenant may override, and how the limits file writes them (durations as text).
OVERRIDABLE = tuple(f.name for f in dataclasses.fields(TenantLimits))
# A series counts as active while its newest sample is younger than this.
ACTIVE_WINDOW_MS = 3600 * 1000


def defaults_of(config: GatewayConfig) -> TenantLimits:
    """The limits of a tenant the limits file does not name: the settings of the same
    names; a burst of 0 is one second's worth of the rate."""
    limits = TenantLimits(**{name: getattr(config, name) for name in OVERRIDABLE})
    return dataclasses.replace(
        limits, ingestion_burst=limits.ingestion_burst or int(limits.ingestion_rate)
    )


class Limits:
    """Every tenant's limits, from the settings and the limits file (read once)."""

    def __init__(self, config: GatewayConfig) -> None:
        self.defaults = defaults_of(config)
        self.overrides = load_limits_file(config.limits_file, self.defaults)

    def of(self, tenant: str) -> TenantLimits:
        """The limits of `tenant`."""
        return self.overrides.get(tenant, self.defaults)


def load_limits_file(path: str, defaults: TenantLimits) -> dict[str, TenantLimits]:
    """Tenant -> limits from the file; ConfigError naming the file, tenant and key."""
    if not path:
        return {}
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError("limits_file", path, f"unreadable: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError("limits_file", path, "must hold a JSON object of tenants")
    out = {}
    for tenant, entry in doc.items():
        if not isinstance(entry, dict):
            raise ConfigError("limits_file", path, f"tenant {tenant!r}: not an object")
        unknown = sorted(set(entry) - set(OVERRIDABLE))
        if unknown:
            raise ConfigError(
                "limits_file", path, f"tenant {tenant!r}: unknown {unknown}; allowed {OVERRIDABLE}"
            )
        values = {name: _value(path, tenant, name, entry[name], defaults) for name in entry}
        limits = dataclasses.replace(defaults, **values)
        if "ingestion_rate" in entry and "ingestion_burst" not in entry:
            limits = dataclasses.replace(limits, ingestion_burst=int(limits.ingestion_rate))
        out[tenant] = limits
    return out


def _value(path: str, tenant: str, name: str, raw: Any, defaults: TenantLimits) -> Any:
    where = f"tenant {tenant!r}: {name}"
    default = getattr(defaults, name)
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ConfigError("limits_file", path, f"{where}: must be a number, got {raw!r}")
    if raw < 0:
        raise ConfigError("limits_file", path, f"{where}: must not be negative")
    return float(raw) if isinstance(default, float) else int(raw)


class RateLimiter:
    """Token buckets per tenant: `rate` samples a second, up to `burst` at once."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # tenant -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, tenant: str, samples: int, limits: TenantLimits) -> None:
        """Spend `samples` tokens; RateLimited (nothing spent) if there are too few."""
        if limits.ingestion_rate <= 0 or samples <= 0:
            return
        burst = max(limits.ingestion_burst, 1)
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.get(tenant, (float(burst), now))
            tokens = min(float(burst), tokens + (now - at) * limits.ingestion_rate)
            if samples > tokens:
                self._buckets[tenant] = (tokens, now)
                raise RateLimited(
                    f"tenant {tenant} is over its ingestion rate limit "
                    f"(ingestion_rate={limits.ingestion_rate:g} samples/s, "
                    f"ingestion_burst={burst}): {samples} samples sent, {int(tokens)} allowed now"
                )
            self._buckets[tenant] = (tokens - samples, now)
