"""The `strata` command line."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Collection, Iterable, Sequence
from importlib.metadata import version
from typing import Any, TypeVar

from blocks.catalog import (
    MAX_TIME,
    MIN_TIME,
    check_series_ids,
    collect_rows,
    dump_series,
    format_json_lines,
    format_labels,
    format_summary,
    format_table,
    format_time,
    open_block,
    parse_block_ref,
    parse_matcher,
    parse_time,
    select_series,
)
from blocks.errors import StrataError, Unavailable
from blocks.objstore.base import ObjectStore
from blocks.objstore.factory import bucket_label, open_existing_store
from compactor.config import build_compactor_config, compactor_settings
from gateway.config import ConfigError, FileValue, GatewayConfig, build_config, settings
from gateway.config_file import CONFIG_ENV, load_config_file
from gateway.selector import parse_selector
from gateway.tenants import check_tenant

T = TypeVar("T")
# The settings `strata inspect` reads: where the bucket is, nothing about serving.
INSPECT_SETTINGS = ("data_dir", "bucket_url")
# The settings `strata query` reads: the bucket, HTTP, and remote read; nothing of ingest.
QUERY_SETTINGS = (
    "data_dir",
    "listen",
    "default_tenant",
    "auth_file",
    "auth_metrics",
    "tls_cert_file",
    "tls_key_file",
    "bucket_url",
    "max_request_bytes",
    "max_decompressed_bytes",
    "query_max_series",
    "query_max_samples",
    "query_max_response_bytes",
    "query_max_range_ms",
    "limits_file",
    "query_timeout_s",
    "query_concurrency",
    "query_max_frame_bytes",
    "query_downsampled",
    "index_cache_bytes",
    "index_cache_dir",
    "index_cache_disk_bytes",
    "chunk_cache_bytes",
    "stream_cache_bytes",
    "bucket_index_refresh_s",
    "bucket_index_max_age_s",
    "shutdown_timeout_s",
    "log_level",
)


def add_setting_flags(
    parser: argparse.ArgumentParser,
    only: Collection[str] = (),
    fields: Sequence[dataclasses.Field[Any]] | None = None,
) -> None:
    """One --flag per GatewayConfig field (or per field named in `only`, or per one of
    `fields` of another settings class), help from the field; and --config FILE."""
    if "--config" not in parser._option_string_actions:
        parser.add_argument(
            "--config",
            metavar="FILE",
            help=f"YAML file of settings (env {CONFIG_ENV}; docs/configuration.md); "
            "flags and STRATA_* variables win over it",
        )
    for f in settings() if fields is None else fields:
        if only and f.name not in only:
            continue
        flag = "--" + f.name.replace("_", "-")
        env = "STRATA_" + f.name.upper()
        parser.add_argument(
            flag,
            dest=f.name,
            metavar=f.name.split("_")[-1].upper(),
            help=f"{f.metadata['help']} (env {env}, default {f.default})",
        )


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="strata", description="Long-term storage for Prometheus.")
    parser.add_argument("--version", action="version", version=f"strata {version('strata')}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the gateway: remote_write in, WAL, head, blocks out, remote_read",
        description="Run the gateway. With no flags it keeps everything under ./data. "
        "Every setting is a flag, a STRATA_* variable and a key of the --config file, in "
        "that order of precedence (docs/configuration.md).",
    )
    add_setting_flags(serve)
    query = commands.add_parser(
        "query",
        help="run a read-only remote_read server over the bucket",
        description=(
            "Serve remote_read from the blocks in the bucket only (no head, no writes); "
            "run as many replicas as you like."
        ),
    )
    add_setting_flags(query, QUERY_SETTINGS)
    compact = commands.add_parser(
        "compact",
        help="merge, downsample and apply retention to the bucket's blocks",
        description="One compaction pass over every tenant of the bucket, then exit (for "
        "cron), or passes every --interval with --loop (serving /metrics on --listen). "
        "Exit status 1 when a tenant failed.",
    )
    compact.add_argument(
        "--loop", action="store_true", help="run a pass every --interval until SIGTERM"
    )
    add_setting_flags(compact, fields=compactor_settings())
    add_inspect_parser(commands)
    from gateway.cli_tools import add_tool_parsers  # it builds on this module's helpers

    add_tool_parsers(commands)
    from gateway.config_check import add_config_parser

    add_config_parser(commands)
    return parser


def add_inspect_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`strata inspect blocks`, `strata inspect series` and `strata inspect starts`."""
    inspect = commands.add_parser(
        "inspect",
        help="look into the bucket: its blocks as a table, or one series of a block",
        description="Look into the bucket without a running gateway: a table of its blocks "
        "(tenant, time range, resolution, series, samples, bytes), one block's series "
        "with every sample's float64 bits, or the start timestamps of a tenant's series.",
    )
    what = inspect.add_subparsers(dest="inspect_command", required=True, metavar="WHAT")
    blocks = what.add_parser(
        "blocks",
        help="one line per block, and a totals line",
        description="List the bucket's complete blocks (those with meta.json), by tenant and "
        "time: time range in UTC, resolution, compaction level, series, samples, chunks, "
        "bytes and bytes per sample, then a totals line.",
    )
    blocks.add_argument("--tenant", type=_arg(check_tenant), help="only this tenant's blocks")
    blocks.add_argument(
        "--json", action="store_true", help="one JSON object per block and line, no totals"
    )
    blocks.add_argument(
        "--summary",
        action="store_true",
        help="one line per tenant and resolution (blocks, time range, samples, bytes)",
    )
    _add_time_range(blocks, "only blocks with data in this range")
    add_setting_flags(blocks, INSPECT_SETTINGS)
    series = what.add_parser(
        "series",
        help="the samples of chosen series of one block, with their bits",
        description="Print the chosen series of one block: a '# series ID {labels}' line, "
        "then per sample 'timestamp_ms  UTC time  value  0x<float64 bits>', so NaN payloads "
        "and staleness markers show.",
    )
    series.add_argument("block", metavar="TENANT/BLOCK_ID", type=_arg(_block_ref), help="the block")
    pick = series.add_mutually_exclusive_group(required=True)
    pick.add_argument(
        "--match",
        action="append",
        type=_arg(parse_matcher),
        metavar="NAME=VALUE",
        help="series with this label (equality only; NAME= means without the label); "
        "repeat to require several",
    )
    pick.add_argument(
        "--id",
        dest="series_ids",
        action="append",
        type=int,
        metavar="N",
        help="the series at this position of the block's index; repeatable",
    )
    _add_time_range(series, "only samples in this range")
    add_setting_flags(series, INSPECT_SETTINGS)
    starts = what.add_parser(
        "starts",
        help="the start (created) timestamps of a tenant's float series",
        description="Print, from every block of a tenant, where its series' start (created) "
        "timestamps change: a '# {labels} events=N' line per series, then per change "
        "'sample_ms  UTC time  start_ms  UTC time' (the sample that brought the new start).",
    )
    starts.add_argument("--tenant", required=True, type=_arg(check_tenant), help="the tenant")
    starts.add_argument(
        "--match",
        dest="selector",
        type=_arg(parse_selector),
        metavar="SELECTOR",
        help="only series this PromQL selector selects, e.g. 'http_requests_total{job=\"api\"}'",
    )
    _add_time_range(starts, "only changes brought by samples in this range")
    add_setting_flags(starts, INSPECT_SETTINGS)


def _add_time_range(parser: argparse.ArgumentParser, what: str) -> None:
    when = "ms since the epoch or ISO-8601, UTC unless a zone is given; inclusive"
    parser.add_argument(
        "--from",
        dest="mint",
        type=_arg(parse_time),
        default=MIN_TIME,
        metavar="TIME",
        help=f"{what}: start ({when})",
    )
    parser.add_argument(
        "--to",
        dest="maxt",
        type=_arg(parse_time),
        default=MAX_TIME,
        metavar="TIME",
        help=f"{what}: end ({when})",
    )


def _block_ref(text: str) -> tuple[str, str]:
    tenant, block_id = parse_block_ref(text)
    return check_tenant(tenant), block_id


def _arg(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse type from a parser raising StrataError, so a bad value is a usage error."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except StrataError as exc:
            raise argparse.ArgumentTypeError(exc.reason) from None

    return convert


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `strata` command."""
    args = build_parser().parse_args(argv)
    if args.command in ("serve", "query"):
        try:
            if args.command == "serve":
                config = build_config(*_only(args, [f.name for f in settings()]))
            else:
                config = build_config(*_only(args, QUERY_SETTINGS))
        except ConfigError as exc:
            print(f"strata: {exc}", file=sys.stderr)
            return 2
        from gateway.server import serve

        logging.basicConfig(
            level=config.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s %(message)s",
        )
        try:
            return serve(config, query_only=args.command == "query")
        except StrataError as exc:
            # A bucket that is missing or unreachable at start: say so, no traceback.
            print(f"strata: {exc.reason}", file=sys.stderr)
            return 1
    if args.command == "inspect":
        return run_inspect(args)
    if args.command == "compact":
        return run_compact(args)
    if args.command in ("verify", "import"):
        from gateway.cli_tools import run_tool

        return run_tool(args)
    if args.command == "config":
        from gateway.config_check import run_config

        return run_config(args)
    return 2


def run_compact(args: argparse.Namespace) -> int:
    """`strata compact`: 0 when every tenant was compacted, 1 otherwise."""
    try:
        flags = {f.name: getattr(args, f.name) for f in compactor_settings()}
        file = load_config_file(args.config)
        config = build_compactor_config(flags, os.environ, file.compact_values() if file else None)
    except ConfigError as exc:
        print(f"strata: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    from compactor.main import compact

    try:
        return compact(config, loop=args.loop)
    except StrataError as exc:
        print(f"strata: {exc.reason}", file=sys.stderr)
        return 1


def inspect_config(args: argparse.Namespace) -> GatewayConfig:
    """Settings from the inspect flags, their STRATA_* variables and config-file keys only.

    The serving settings' variables and keys, set for the gateway in the same environment
    or file, are not read: a bad one of them must not stop a look into the bucket.
    """
    return build_config(*_only(args, INSPECT_SETTINGS))


def _only(
    args: argparse.Namespace, names: Collection[str]
) -> tuple[dict[str, str | None], dict[str, str], dict[str, FileValue]]:
    """The flags, STRATA_* variables and config file values of just these settings."""
    flags = {name: getattr(args, name) for name in names}
    variables = {"STRATA_" + name.upper() for name in names}
    file = load_config_file(getattr(args, "config", None))
    written = {k: v for k, v in file.serve.items() if k in names} if file else {}
    return flags, {k: v for k, v in os.environ.items() if k in variables}, written


def run_inspect(args: argparse.Namespace) -> int:
    """`strata inspect …`: 0 when all went well, 1 when something was not found or read."""
    try:
        config = inspect_config(args)
    except ConfigError as exc:
        print(f"strata: {exc}", file=sys.stderr)
        return 2
    try:
        with open_existing_store(config.bucket) as store:
            if args.inspect_command == "blocks":
                return _inspect_blocks(store, args)
            if args.inspect_command == "starts":
                return _inspect_starts(store, args)
            return _inspect_series(store, args)
    except Unavailable as exc:
        print(
            f"strata: cannot read bucket {bucket_label(config.bucket)}: {exc.reason}",
            file=sys.stderr,
        )
    except StrataError as exc:
        print(f"strata: {exc.reason}", file=sys.stderr)
    except BrokenPipeError:
        # The reader (`| head`) has gone: what it took was all it wanted. Point stdout at
        # /dev/null so that the interpreter's last flush does not fail once more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 1


def _inspect_blocks(store: ObjectStore, args: argparse.Namespace) -> int:
    listing = collect_rows(store, tenant=args.tenant, mint=args.mint, maxt=args.maxt)
    if args.json:
        _print_lines(format_json_lines(listing.rows))
    elif args.summary:
        _print_lines(format_summary(listing.rows))
    else:
        _print_lines(format_table(listing.rows))
    for problem in listing.skipped:
        print(f"strata: skipped block {problem}", file=sys.stderr)
    return 1 if listing.skipped else 0


def _inspect_series(store: ObjectStore, args: argparse.Namespace) -> int:
    tenant, block_id = args.block
    reader = open_block(store, tenant, block_id)
    if args.series_ids:
        ids = check_series_ids(reader.index, args.series_ids)
    else:
        ids = select_series(reader.index, args.match)
    if not ids:
        wanted = " ".join(f"{n}={v}" for n, v in args.match)
        print(f"strata: no series of {tenant}/{block_id} matches {wanted}", file=sys.stderr)
        return 1
    _print_lines(dump_series(reader, ids, args.mint, args.maxt))
    return 0


def _inspect_starts(store: ObjectStore, args: argparse.Namespace) -> int:
    from querier.start_times import read_starts  # the head and querier, only needed here

    found = read_starts(store, args.tenant, args.selector or [], args.mint, args.maxt)
    if not found:
        print(f"strata: no start timestamps of tenant {args.tenant} in range", file=sys.stderr)
        return 1
    for labels, (ts, starts) in found.items():
        print(f"# {format_labels(labels)} events={len(ts)}")
        _print_lines(
            f"{t}  {format_time(t, always_millis=True)}  {s}  {format_time(s, always_millis=True)}"
            for t, s in zip(ts.tolist(), starts.tolist(), strict=True)
        )
    return 0


def _print_lines(lines: Iterable[str]) -> None:
    out = sys.stdout
    for line in lines:
        out.write(line + "\n")
    out.flush()


if __name__ == "__main__":
    sys.exit(main())
