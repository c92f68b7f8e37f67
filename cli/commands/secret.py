"""``ordersync secret new`` and ``ordersync secret check VAR``: credentials that are not defaults.

``check`` reads the variable from the environment (as Flower, compose and systemd do) and exits
1, naming it, when its value is empty, a placeholder or too short (``pipeline.credentials``);
the deploy files run it before Flower starts.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from pipeline import credentials

BASIC_AUTH = frozenset({"FLOWER_BASIC_AUTH"})


def register(subparsers: Any) -> None:
    """Add ``secret new`` and ``secret check`` to the ``ordersync`` parser."""
    parser = subparsers.add_parser("secret", help="make a secret, or check one is not a default")
    actions = parser.add_subparsers(dest="secret_action", metavar="ACTION", required=True)
    new = actions.add_parser("new", help="print a fresh random secret")
    new.set_defaults(func=run_new)
    check = actions.add_parser("check", help="refuse an empty, placeholder or short credential")
    check.add_argument(
        "variable", metavar="VAR", help="environment variable, e.g. FLOWER_BASIC_AUTH"
    )
    check.set_defaults(func=run_check)


def run_new(args: argparse.Namespace) -> int:
    print(credentials.new_secret())
    return 0


def run_check(args: argparse.Namespace) -> int:
    value = os.environ.get(args.variable)
    try:
        if args.variable in BASIC_AUTH:
            credentials.require_basic_auth(args.variable, value)
        else:
            credentials.require(args.variable, value)
    except credentials.CredentialRefused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    return 0
