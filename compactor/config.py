"""`strata compact` settings: one frozen object built once from flags, STRATA_* variables and
the `compact:` section of the config file.

Durations are written the way Prometheus writes them (`30d`, `40h`, `1h30m`, `0`), so a
retention reads as a retention; `planner_config` turns them into milliseconds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compactor.planner import PlannerConfig
from gateway.config import ConfigError, FileValue, build_settings, listen_host_port

_UNITS_MS = {
    "ms": 1,
    "s": 1000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 7 * 86_400_000,
    "y": 365 * 86_400_000,
}
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")


def parse_duration_ms(key: str, text: str) -> int:
    """`1h30m` → 5400000; `0` → 0. ConfigError naming the key otherwise."""
    text = text.strip()
    if text == "0":
        return 0
    pos, total = 0, 0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += int(match.group(1)) * _UNITS_MS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ConfigError(key, text, "must be a duration such as 30d, 40h, 1h30m or 0")
    return total


# Settings of type str that are not durations.
_NOT_DURATIONS = ("bucket_url", "listen", "log_level", "retention_overrides")


def is_duration(f: dataclasses.Field[Any]) -> bool:
    """Whether a CompactorConfig field is a duration written like `30d`."""
    return f.init and f.type == "str" and f.name not in _NOT_DURATIONS


# What a tenant's entry in the overrides file may set.
TENANT_SETTINGS = ("retention_raw", "retention_5m", "retention_1h")


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True, slots=True, kw_only=True)
class CompactorConfig:
    """Everything `strata compact` can be told."""

    data_dir: Path = field(
        default=Path("data"),
        metadata=_help("directory holding the embedded bucket and the compactor's work space"),
    )
    bucket_url: str = field(
        default="", metadata=_help("object store URL; empty: the embedded DATA_DIR/bucket")
    )
    listen: str = field(
        default="127.0.0.1:9202", metadata=_help("HOST:PORT serving /metrics while --loop runs")
    )
    interval: str = field(default="5m", metadata=_help("pause between passes with --loop"))
    consistency_delay: str = field(
        default="30m",
        metadata=_help("how far a tenant's newest data must be past a range before merging it"),
    )
    downsampling: bool = field(default=True, metadata=_help("write 5m and 1h copies at all"))
    downsample_5m_after: str = field(
        default="40h", metadata=_help("raw blocks at least this long get a 5m copy")
    )
    downsample_1h_after: str = field(
        default="10d", metadata=_help("5m blocks at least this long get a 1h copy")
    )
    retention_raw: str = field(default="30d", metadata=_help("keep raw blocks this long; 0: ever"))
    retention_5m: str = field(default="180d", metadata=_help("keep 5m blocks this long; 0: ever"))
    retention_1h: str = field(default="0", metadata=_help("keep 1h blocks this long; 0: ever"))
    delete_delay: str = field(
        default="48h",
        metadata=_help("time between marking a block and deleting it, for running queries"),
    )
    partial_upload_cleanup_age: str = field(
        default="24h", metadata=_help("remove uploads left without meta.json after this long")
    )
    retention_overrides: str = field(
        default="",
        metadata=_help(
            "JSON file of per-tenant retention, e.g. "
            '{"team-a": {"retention_raw": "7d"}}; tenants not in it use the flags'
        ),
    )
    lease_ttl: str = field(
        default="30m",
        metadata=_help("how long a tenant's lease holds without renewal (after a crash)"),
    )
    log_level: str = field(default="info", metadata=_help("debug, info, warning or error"))
    # Read from `retention_overrides` once, when the settings are built.
    tenant_overrides: dict[str, dict[str, int]] = field(
        init=False, default_factory=dict, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if is_duration(f):
                parse_duration_ms(f.name, getattr(self, f.name))
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ConfigError("log_level", self.log_level, "must be debug, info, warning or error")
        if self.lease_ttl_s <= 0:
            raise ConfigError("lease_ttl", self.lease_ttl, "must be positive")
        listen_host_port(self.listen)
        object.__setattr__(self, "tenant_overrides", load_overrides(self.retention_overrides))

    def ms(self, name: str) -> int:
        """A duration setting in milliseconds."""
        value: str = getattr(self, name)
        return parse_duration_ms(name, value)

    @property
    def planner_config(self) -> PlannerConfig:
        """The planner's settings for tenants without overrides."""
        return self.planner_config_for("")

    def planner_config_for(self, tenant: str) -> PlannerConfig:
        """The planner's settings for one tenant: its overrides, else the flags."""
        own = self.tenant_overrides.get(tenant, {})
        return PlannerConfig(
            consistency_delay_ms=self.ms("consistency_delay"),
            downsampling=self.downsampling,
            raw_to_5m_min_range_ms=self.ms("downsample_5m_after"),
            five_m_to_1h_min_range_ms=self.ms("downsample_1h_after"),
            retention_raw_ms=own.get("retention_raw", self.ms("retention_raw")),
            retention_5m_ms=own.get("retention_5m", self.ms("retention_5m")),
            retention_1h_ms=own.get("retention_1h", self.ms("retention_1h")),
            delete_delay_ms=self.ms("delete_delay"),
        )

    @property
    def bucket(self) -> str:
        """The object store URL, the embedded local bucket when none is set."""
        return self.bucket_url or f"file://{(self.data_dir / 'bucket').absolute()}"

    @property
    def work_dir(self) -> Path:
        """Where new blocks are built before their upload."""
        return self.data_dir / "compactor"

    @property
    def interval_s(self) -> float:
        """The pause between passes, in seconds."""
        return self.ms("interval") / 1000

    @property
    def lease_ttl_s(self) -> float:
        """The lease's time to live, in seconds."""
        return self.ms("lease_ttl") / 1000


def load_overrides(path: str) -> dict[str, dict[str, int]]:
    """Tenant -> setting -> milliseconds, from the overrides file; ConfigError naming
    the file and the entry when it cannot be used."""
    if not path:
        return {}
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError("retention_overrides", path, f"unreadable: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError("retention_overrides", path, "must hold a JSON object of tenants")
    out: dict[str, dict[str, int]] = {}
    for tenant, entry in doc.items():
        if not isinstance(entry, dict):
            raise ConfigError("retention_overrides", path, f"tenant {tenant!r}: not an object")
        unknown = set(entry) - set(TENANT_SETTINGS)
        if unknown:
            raise ConfigError(
                "retention_overrides",
                path,
                f"tenant {tenant!r}: unknown {sorted(unknown)}; allowed {list(TENANT_SETTINGS)}",
            )
        out[tenant] = {
            name: parse_duration_ms(f"retention_overrides[{tenant}].{name}", str(value))
            for name, value in entry.items()
        }
    return out


def compactor_settings() -> list[dataclasses.Field[Any]]:
    """The settable fields of CompactorConfig, in declaration order."""
    return [f for f in dataclasses.fields(CompactorConfig) if f.init]


def build_compactor_config(
    flags: Mapping[str, str | None],
    environ: Mapping[str, str] = os.environ,
    file_values: Mapping[str, FileValue] | None = None,
) -> CompactorConfig:
    """Flags win over STRATA_* environment, over the config file, over defaults."""
    return build_settings(CompactorConfig, compactor_settings(), flags, environ, file_values)
