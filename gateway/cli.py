"""The `strata` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from importlib.metadata import version

from gateway.config import ConfigError, build_config, settings


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """One --flag per GatewayConfig field, its help and default from the field."""
    for f in settings():
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
        help="run the gateway: remote_write in, WAL, head",
        description="Run the gateway. With no flags it keeps everything under ./data.",
    )
    add_setting_flags(serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `strata` command."""
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        try:
            config = build_config(vars(args))
        except ConfigError as exc:
            print(f"strata: {exc}", file=sys.stderr)
            return 2
        from gateway.server import serve

        logging.basicConfig(
            level=config.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s %(message)s",
        )
        return serve(config)
    return 2


if __name__ == "__main__":
    sys.exit(main())
