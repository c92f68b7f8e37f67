"""The ``ordersync`` command line. Each command group lives in ``cli.commands.<name>``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Each module exposes ``register(subparsers)``, which adds its parser(s) and sets
# ``func=<handler(args) -> int>`` with ``set_defaults``.
COMMAND_MODULES: tuple[str, ...] = (
    "config",
    "plan",
    "db",
    "demo",
    "sync",
    "status",
    "processes",
    "mapping",
    "secret",
    "verify",
    "deletes",
    "listen",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ordersync", description=__doc__)
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=None,
        help="settings file (default: $ORDERSYNC_CONFIG or ./ordersync.toml)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"cli.commands.{name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
