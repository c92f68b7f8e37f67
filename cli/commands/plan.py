"""``ordersync plan N``: the credit-optimal plan for N pending rows beside the naive ones.

Reads no settings and touches neither the database nor Zoho: it is the planner alone, so an
operator can see what a sync of a given size will cost before running it.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from pipeline.planner import Plan, plan


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {value}")
    return value


def register(subparsers: Any) -> None:
    """Add the ``plan`` command to the ``ordersync`` parser."""
    parser = subparsers.add_parser(
        "plan",
        help="show the cheapest bulk/upsert mix for N rows",
        description=__doc__,
    )
    parser.add_argument("rows", type=_non_negative, metavar="N", help="pending rows")
    parser.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    parser.add_argument(
        "--no-bulk",
        dest="allow_bulk",
        action="store_false",
        help="upsert only (the near-real-time mode's deadline is shorter than a bulk job)",
    )
    parser.add_argument(
        "--credits-available",
        type=_non_negative,
        default=None,
        metavar="C",
        help="plan only what C credits can pay for; the rest waits",
    )
    parser.set_defaults(func=run)


def _line(name: str, p: Plan) -> str:
    return f"  {name:<18} {p.credits:>9,} {p.calls:>7,}   {p.describe()}"


def run(args: argparse.Namespace) -> int:
    """Print the plan (text or ``--json``); exit 0."""
    best = plan(args.rows, allow_bulk=args.allow_bulk, credits_available=args.credits_available)
    if args.json:
        print(json.dumps(best.as_dict()))
        return 0
    print(f"{args.rows:,} pending rows")
    print(f"  {'':<18} {'credits':>9} {'calls':>7}   mix")
    print(_line("plan", best))
    if best.waiting_reason:
        print(f"  waiting: {best.waiting_reason}")
    print("naive alternatives:")
    for name, alternative in best.alternatives():
        print(_line(name, alternative))
    return 0
