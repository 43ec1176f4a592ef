"""The operator tools of the `strata` command: `strata verify` and `strata import`."""

from __future__ import annotations

import argparse
import logging
import sys
import time

from blocks.catalog import parse_time
from blocks.errors import StrataError, Unavailable
from blocks.objstore.factory import bucket_label, open_existing_store, open_store
from blocks.verify import verify_bucket
from gateway.backfill import Importer, parse_matcher
from gateway.cli import INSPECT_SETTINGS, _arg, _only, add_setting_flags
from gateway.config import ConfigError, build_config
from gateway.head_cut import BLOCK_DURATION_MS
from gateway.tenants import check_tenant

DAY_MS = 86_400_000


def add_tool_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`strata verify` and `strata import`."""
    verify = commands.add_parser(
        "verify",
        help="check the bucket's blocks for damage: exit 1 on errors",
        description="Read the bucket and check every block: meta.json, index, chunk objects "
        "present and long enough, every page's checksum (unless --quick), partial uploads, "
        "overlapping blocks, bucket index drift. Prints one line per finding; exit status 0 "
        "without errors (warnings allowed unless --strict), 1 with errors.",
    )
    verify.add_argument("--tenant", type=_arg(check_tenant), help="only this tenant")
    verify.add_argument(
        "--quick", action="store_true", help="skip reading every page (sizes and indexes only)"
    )
    verify.add_argument("--strict", action="store_true", help="warnings fail too (exit 1)")
    add_setting_flags(verify, INSPECT_SETTINGS)
    backfill = commands.add_parser(
        "import",
        help="backfill a tenant from a Prometheus over its remote_read API",
        description="Read a Prometheus's data over its /api/v1/read, one 2 h window at a "
        "time, and write each window as a block into the bucket. Run it again after an "
        "interruption: windows already imported are skipped, nothing is imported twice.",
    )
    backfill.add_argument(
        "--source", required=True, metavar="URL", help="the Prometheus, e.g. http://prom:9090"
    )
    backfill.add_argument(
        "--tenant", type=_arg(check_tenant), default=None, help="tenant to write (default tenant)"
    )
    backfill.add_argument(
        "--from",
        dest="mint",
        type=_arg(parse_time),
        default=None,
        metavar="TIME",
        help="start, ms or ISO-8601 (default: 15 days ago)",
    )
    backfill.add_argument(
        "--to",
        dest="maxt",
        type=_arg(parse_time),
        default=None,
        metavar="TIME",
        help="end, exclusive (default: the start of the current 2 h window, which the "
        "gateway receives over remote_write)",
    )
    backfill.add_argument(
        "--match",
        action="append",
        type=_arg(parse_matcher),
        metavar="MATCHER",
        help='series to import: NAME=VALUE, !=, =~ or !~; repeatable (default __name__=~".+")',
    )
    backfill.add_argument(
        "--source-header",
        action="append",
        default=[],
        metavar="NAME:VALUE",
        help="an HTTP header for the source, e.g. 'Authorization: Bearer …'; repeatable",
    )
    add_setting_flags(backfill, (*INSPECT_SETTINGS, "default_tenant"))


def run_tool(args: argparse.Namespace) -> int:
    """Run `strata verify` or `strata import`; the exit status."""
    names = INSPECT_SETTINGS if args.command == "verify" else (*INSPECT_SETTINGS, "default_tenant")
    try:
        config = build_config(*_only(args, names))
    except ConfigError as exc:
        print(f"strata: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(message)s")
    try:
        if args.command == "verify":
            return _verify(config.bucket, args)
        return _import(config.bucket, args, args.tenant or config.default_tenant)
    except Unavailable as exc:
        print(f"strata: {exc.reason}", file=sys.stderr)
    except StrataError as exc:
        print(f"strata: {exc.reason}", file=sys.stderr)
    return 1


def _verify(bucket: str, args: argparse.Namespace) -> int:
    with open_existing_store(bucket) as store:
        report = verify_bucket(
            store, args.tenant, full=not args.quick, progress=logging.getLogger(__name__).debug
        )
    for finding in report.findings:
        print(finding.line())
    print(
        f"verified {report.blocks} blocks of {report.tenants} tenants in "
        f"{bucket_label(bucket)}: {report.errors} errors, {report.warnings} warnings"
        + (
            f", {report.samples_read} samples and {report.histograms_read} histograms read"
            if not args.quick
            else ""
        )
    )
    failed = report.errors or (args.strict and report.warnings)
    return 1 if failed else 0


def _import(bucket: str, args: argparse.Namespace, tenant: str) -> int:
    now_ms = int(time.time() * 1000)
    mint = args.mint if args.mint is not None else now_ms - 15 * DAY_MS
    maxt = args.maxt if args.maxt is not None else now_ms - now_ms % BLOCK_DURATION_MS
    if maxt <= mint:
        print(f"strata: nothing to import: --to ({maxt}) is not after --from ({mint})")
        return 2
    headers = {}
    for header in args.source_header:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            print(f"strata: --source-header must be NAME:VALUE, got {header!r}", file=sys.stderr)
            return 2
        headers[name.strip()] = value.strip()
    matchers = args.match or [parse_matcher("__name__=~.+")]
    with open_store(bucket) as store:
        importer = Importer(store, tenant, args.source, matchers, headers=headers)
        try:
            summary = importer.run(mint, maxt, report=lambda line: print(line, flush=True))
        finally:
            importer.close()
    print(summary.line())
    return 0
