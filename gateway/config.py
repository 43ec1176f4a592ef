"""Gateway settings: one frozen object built once from flags, STRATA_* environment and
the YAML config file (gateway/config_file.py), in that order of precedence.

Every field has a default that lets `strata serve` run with no configuration at all.
The `help` of each field is what `strata serve --help` prints.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from blocks.errors import InvalidRequest, StrataError
from gateway.tenants import check_tenant
from querier.limits import QueryLimits

MIB = 1 << 20


T = TypeVar("T")


class ConfigError(StrataError):
    """A setting has a value Strata cannot use; names the key and the reason, and where
    the value was written when it came from the config file (`FILE:LINE`)."""

    def __init__(self, key: str, value: object, why: str, *, where: str = "") -> None:
        self.key = key
        self.value = value
        self.why = why
        self.where = where
        super().__init__(self.describe())

    def describe(self) -> str:
        """One line: `invalid setting KEY=VALUE: WHY`, or `FILE:LINE: KEY: WHY (got VALUE)`
        for a value from the config file (no key for a problem of the whole file)."""
        if not self.where:
            return f"invalid setting {self.key}={self.value!r}: {self.why}"
        line = f"{self.where}: {self.key}: {self.why}" if self.key else f"{self.where}: {self.why}"
        return line if self.value is None else f"{line} (got {self.value!r})"

    def at(self, where: str, key: str = "") -> ConfigError:
        """The same problem, located in the config file (under the key as the file writes
        it, `compact.retention_raw`); itself when `where` is empty or already known."""
        if not where or self.where:
            return self
        return ConfigError(key or self.key, self.value, self.why, where=where)


@dataclass(frozen=True, slots=True)
class FileValue:
    """A setting's value as the config file writes it, read like its STRATA_* variable."""

    text: str
    where: str
    """`FILE:LINE` of the key, for error messages."""
    key: str
    """The key as the file writes it, with its section: `compact.retention_raw`."""

    def locate(self, exc: ConfigError) -> ConfigError:
        """A problem with this value, named by its key and line in the file."""
        # `retention_overrides[t].retention_raw` keeps its tail after the key.
        tail = exc.key[len(exc.key.partition("[")[0]) :]
        return exc.at(self.where, self.key + tail)


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayConfig:
    """Everything `strata serve` can be told."""

    data_dir: Path = field(
        default=Path("data"), metadata=_help("directory for the WAL and the embedded bucket")
    )
    listen: str = field(default="127.0.0.1:9201", metadata=_help("HOST:PORT to serve HTTP on"))
    default_tenant: str = field(
        default="default", metadata=_help("tenant for requests without X-Scope-OrgID")
    )
    auth_file: str = field(
        default="",
        metadata=_help(
            "JSON file of bearer tokens and basic-auth users and the tenants each may write "
            "and read (docs/security.md); empty: no authentication"
        ),
    )
    auth_metrics: bool = field(
        default=False,
        metadata=_help("with auth_file set, /metrics also needs a valid credential"),
    )
    tls_cert_file: str = field(
        default="",
        metadata=_help("PEM certificate (chain) to serve HTTPS with; empty: plain HTTP"),
    )
    tls_key_file: str = field(default="", metadata=_help("PEM private key of tls_cert_file"))
    wal_fsync: bool = field(
        default=True,
        metadata=_help("fsync the WAL before answering 2xx (off breaks the durability contract)"),
    )
    wal_segment_bytes: int = field(
        default=64 * MIB, metadata=_help("WAL segment size before a new file is started")
    )
    max_request_bytes: int = field(
        default=8 * MIB, metadata=_help("largest compressed request body accepted")
    )
    max_decompressed_bytes: int = field(
        default=64 * MIB,
        metadata=_help("largest size a request body may declare it decompresses to"),
    )
    max_labels_per_series: int = field(
        default=30, metadata=_help("most labels one series may have")
    )
    max_label_name_bytes: int = field(default=1024, metadata=_help("longest label name, in bytes"))
    max_label_value_bytes: int = field(
        default=2048, metadata=_help("longest label value, in bytes")
    )
    label_name_rule: str = field(
        default="utf8",
        metadata=_help(
            "'utf8' accepts any UTF-8 label name (Prometheus 3); "
            "'legacy' only [a-zA-Z_][a-zA-Z0-9_]* (Prometheus 2)",
        ),
    )
    max_future_ms: int = field(
        default=10 * 60 * 1000,
        metadata=_help("reject samples more than this far ahead of the clock"),
    )
    max_sample_age_ms: int = field(
        default=0,
        metadata=_help("reject samples older than this, per tenant (0: any age; 400 too_old)"),
    )
    ingestion_rate: float = field(
        default=0.0,
        metadata=_help("samples per second a tenant may write (0: no limit; over it: 429)"),
    )
    ingestion_burst: int = field(
        default=0,
        metadata=_help(
            "samples a tenant may send at once above its rate (0: one second's worth); "
            "keep it above Prometheus's max_samples_per_send"
        ),
    )
    max_active_series: int = field(
        default=0,
        metadata=_help(
            "series with a sample in the last hour a tenant may have (0: no limit; "
            "new series past it: 400 max_active_series)"
        ),
    )
    limits_file: str = field(
        default="",
        metadata=_help(
            "JSON file of per-tenant limits overriding the settings above, e.g. "
            '{"team-a": {"ingestion_rate": 50000}} (docs/security.md#limits)'
        ),
    )
    exemplar_retention_s: float = field(
        default=3 * 86400.0,
        metadata=_help(
            "how long exemplars are kept, by their timestamps (a weekend's incidents can "
            "still be traced on Monday)"
        ),
    )
    max_exemplars_per_tenant: int = field(
        default=20_000,
        metadata=_help(
            "exemplars a tenant keeps at most, about 400 bytes of memory each; past it "
            "the oldest go first"
        ),
    )
    max_metadata_per_tenant: int = field(
        default=10_000,
        metadata=_help("metrics whose type, unit and help a tenant keeps; more are refused"),
    )
    head_max_bytes: int = field(
        default=512 * MIB,
        metadata=_help("memory budget of the head; over it writes answer 503 until it shrinks"),
    )
    head_freeze_samples: int = field(
        default=1 << 18,
        metadata=_help("samples a head buffers uncompressed before it compresses them"),
    )
    bucket_url: str = field(
        default="",
        metadata=_help(
            "where blocks go: file:///path or s3://bucket/prefix?endpoint=URL&region=R"
            "&path_style=true (default: file://DATA_DIR/bucket)"
        ),
    )
    cut_grace_ms: int = field(
        default=10 * 60 * 1000,
        metadata=_help("a 2 h window is cut into a block once the head is this far past its end"),
    )
    cut_interval_s: float = field(
        default=15.0,
        metadata=_help(
            "how often the head is checked for windows to cut (a write that makes one due "
            "wakes the check at once)"
        ),
    )
    upload_backoff_max_s: float = field(
        default=300.0, metadata=_help("longest wait between retries of a failed block upload")
    )
    partial_upload_cleanup_age_s: float = field(
        default=86400.0,
        metadata=_help(
            "delete the objects of a block upload that never got its meta.json once the "
            "block and its newest object are this old (checked hourly)"
        ),
    )
    query_max_series: int = field(
        default=100_000, metadata=_help("most series one remote-read query may return")
    )
    query_max_samples: int = field(
        default=20_000_000,
        metadata=_help("most samples one remote-read query may read (counted by chunks)"),
    )
    query_max_response_bytes: int = field(
        default=256 * MIB,
        metadata=_help("largest SAMPLES answer, built whole in memory (streamed answers are not)"),
    )
    query_max_range_ms: int = field(
        default=0, metadata=_help("longest time range one query may span; 0: unlimited")
    )
    query_timeout_s: float = field(
        default=120.0, metadata=_help("time budget of a remote-read request, waiting included")
    )
    query_concurrency: int = field(
        default=4, metadata=_help("remote-read requests run at once; more wait for a slot")
    )
    query_max_frame_bytes: int = field(
        default=1 * MIB, metadata=_help("largest frame of a streamed remote-read answer")
    )
    query_downsampled: bool = field(
        default=True,
        metadata=_help(
            "answer remote-read queries from downsampled blocks where their step and range "
            "allow (off: raw blocks only)"
        ),
    )
    chunk_cache_bytes: int = field(
        default=64 * MIB,
        metadata=_help("memory for decoded chunks kept between queries (0: none)"),
    )
    stream_cache_bytes: int = field(
        default=32 * MIB,
        metadata=_help(
            "memory for XOR-encoded chunks kept between streamed remote-read answers (0: none)"
        ),
    )
    index_cache_bytes: int = field(
        default=64 * MIB, metadata=_help("memory for decoded block indexes kept between queries")
    )
    index_cache_dir: str = field(
        default="",
        metadata=_help(
            "local directory where block indexes larger than a quarter of index_cache_bytes "
            "are kept decoded and read in place (empty: DATA_DIR/index-cache)"
        ),
    )
    index_cache_disk_bytes: int = field(
        default=1024 * MIB,
        metadata=_help(
            "disk for index_cache_dir (0: none; big indexes are then decoded for every query)"
        ),
    )
    bucket_index_refresh_s: float = field(
        default=30.0, metadata=_help("how often a tenant's bucket index is fetched again")
    )
    bucket_index_max_age_s: float = field(
        default=86400.0,
        metadata=_help("a bucket index older than this is not trusted; the bucket is listed"),
    )
    shutdown_timeout_s: float = field(
        default=25.0, metadata=_help("how long SIGTERM waits for in-flight requests")
    )
    log_level: str = field(default="info", metadata=_help("debug, info, warning or error"))

    def __post_init__(self) -> None:
        if self.label_name_rule not in ("utf8", "legacy"):
            raise ConfigError("label_name_rule", self.label_name_rule, "must be utf8 or legacy")
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ConfigError("log_level", self.log_level, "must be debug, info, warning or error")
        for name in ("max_sample_age_ms", "ingestion_rate", "ingestion_burst", "max_active_series"):
            if getattr(self, name) < 0:
                raise ConfigError(name, getattr(self, name), "must not be negative")
        for name in (
            "wal_segment_bytes",
            "max_request_bytes",
            "max_decompressed_bytes",
            "max_labels_per_series",
            "max_label_name_bytes",
            "max_label_value_bytes",
            "head_max_bytes",
            "head_freeze_samples",
            "exemplar_retention_s",
            "max_exemplars_per_tenant",
            "max_metadata_per_tenant",
            "query_max_series",
            "query_max_samples",
            "query_max_response_bytes",
            "query_timeout_s",
            "query_concurrency",
            "query_max_frame_bytes",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(name, getattr(self, name), "must be positive")
        listen_host_port(self.listen)
        try:
            check_tenant(self.default_tenant)
        except InvalidRequest as exc:
            raise ConfigError("default_tenant", self.default_tenant, exc.reason) from None
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ConfigError(
                "tls_key_file" if self.tls_cert_file else "tls_cert_file",
                "",
                "tls_cert_file and tls_key_file are set together",
            )

    @property
    def query_limits(self) -> QueryLimits:
        """The remote-read limits these settings name."""
        return QueryLimits(
            max_series=self.query_max_series,
            max_samples=self.query_max_samples,
            max_response_bytes=self.query_max_response_bytes,
            max_range_ms=self.query_max_range_ms,
            timeout_s=self.query_timeout_s,
            concurrency=self.query_concurrency,
            max_frame_bytes=self.query_max_frame_bytes,
        )

    @property
    def bucket(self) -> str:
        """The object store URL, the embedded local bucket when none is set."""
        return self.bucket_url or f"file://{(self.data_dir / 'bucket').absolute()}"

    @property
    def upload_dir(self) -> Path:
        """Blocks cut from the head, waiting for upload (a durable queue)."""
        return self.data_dir / "upload"

    @property
    def wal_dir(self) -> Path:
        """Where the WAL segments live."""
        return self.data_dir / "wal"


def listen_host_port(listen: str) -> tuple[str, int]:
    """Split HOST:PORT (IPv6 in brackets); ConfigError when it is not one."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError("listen", listen, "must be HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def settings() -> list[dataclasses.Field[Any]]:
    """The fields of GatewayConfig, in declaration order."""
    return list(dataclasses.fields(GatewayConfig))


def parse_value(key: str, raw: str, default: object) -> object:
    """Turn a flag or environment string into the type of the setting's default."""
    if isinstance(default, bool):
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(key, raw, "must be true or false")
    if isinstance(default, int):
        try:
            return int(raw.replace("_", ""))
        except ValueError:
            raise ConfigError(key, raw, "must be a whole number") from None
    if isinstance(default, float):
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(key, raw, "must be a number") from None
    if isinstance(default, Path):
        return Path(raw)
    return raw


def env_var(name: str) -> str:
    """The environment variable of a setting: STRATA_ and its name in capitals."""
    return "STRATA_" + name.upper()


def build_settings(
    make: Callable[..., T],
    fields: Sequence[dataclasses.Field[Any]],
    flags: Mapping[str, str | None],
    environ: Mapping[str, str],
    file_values: Mapping[str, FileValue] | None,
) -> T:
    """Flags win over STRATA_* environment, which wins over the config file, which wins over
    the defaults; a ConfigError about a value from the file says where it is written."""
    values: dict[str, object] = {}
    from_file: dict[str, FileValue] = {}
    for f in fields:
        raw = flags.get(f.name)
        if raw is None:
            raw = environ.get(env_var(f.name))
        if raw is None and file_values and f.name in file_values:
            from_file[f.name] = file_values[f.name]
            raw = from_file[f.name].text
        if raw is not None:
            try:
                values[f.name] = parse_value(f.name, raw, f.default)
            except ConfigError as exc:
                raise _located(exc, from_file) from None
    try:
        return make(**values)
    except ConfigError as exc:
        raise _located(exc, from_file) from None


def _located(exc: ConfigError, from_file: Mapping[str, FileValue]) -> ConfigError:
    written = from_file.get(exc.key.partition("[")[0])
    return written.locate(exc) if written else exc


def build_config(
    flags: Mapping[str, str | None],
    environ: Mapping[str, str] = os.environ,
    file_values: Mapping[str, FileValue] | None = None,
) -> GatewayConfig:
    """Flags win over STRATA_* environment, over the config file, over defaults."""
    return build_settings(GatewayConfig, settings(), flags, environ, file_values)
