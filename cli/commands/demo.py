"""``ordersync demo seed | churn``: a realistic legacy ``orders`` table and a busy application."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import psycopg2

from cli.commands.db import load
from pipeline import demo
from pipeline.legacy.connection import connect


def register(subparsers: Any) -> None:
    """Add ``demo seed`` and ``demo churn`` to the ``ordersync`` parser."""
    parser = subparsers.add_parser(
        "demo", help="demo data: seed the orders table, simulate the app"
    )
    actions = parser.add_subparsers(dest="demo_action", metavar="ACTION", required=True)
    seed = actions.add_parser("seed", help="append N demo orders (generated in SQL)")
    seed.add_argument("--rows", type=int, required=True, help="how many orders to add")
    seed.add_argument("--bad-rows", type=int, default=0, help="how many of them Zoho will reject")
    seed.add_argument("--seed", type=int, default=42, help="random seed (same seed, same rows)")
    seed.add_argument("--drop", action="store_true", help="drop and recreate the table first")
    seed.set_defaults(func=run_seed)
    churn = actions.add_parser("churn", help="insert and update orders like the legacy app does")
    churn.add_argument("--rate", type=float, default=20.0, help="writes per second")
    churn.add_argument("--seconds", type=float, default=10.0, help="how long")
    churn.add_argument("--seed", type=int, default=7, help="random seed")
    churn.set_defaults(func=run_churn)


def run_seed(args: argparse.Namespace) -> int:
    """Seed; prints the id range, bad rows by kind and the time taken."""
    settings = load(args)
    if settings is None:
        return 1
    if args.rows < 0 or args.bad_rows < 0:
        print("error: --rows and --bad-rows must not be negative", file=sys.stderr)
        return 1
    try:
        conn = connect(settings, application="ordersync-demo")
        try:
            if args.drop:
                with conn:
                    demo.create_table(conn, settings, drop=True)
            result = demo.seed(conn, settings, args.rows, bad_rows=args.bad_rows, seed=args.seed)
        finally:
            conn.close()
    except psycopg2.Error as exc:
        print(f"error: {str(exc).strip()}", file=sys.stderr)
        return 1
    kinds: dict[str, int] = {}
    for kind in result.bad_rows.values():
        kinds[kind.value] = kinds.get(kind.value, 0) + 1
    print(
        f"seeded ids {result.first_id}..{result.last_id} ({args.rows:,} rows) in"
        f" {result.seconds:.1f} s; bad rows: {json.dumps(kinds)}"
    )
    return 0


def run_churn(args: argparse.Namespace) -> int:
    """Churn; prints the count of each kind of write."""
    settings = load(args)
    if settings is None:
        return 1
    try:
        conn = connect(settings, application="ordersync-demo-churn")
        try:
            counts = demo.churn(
                conn, settings, rate=args.rate, seconds=args.seconds, seed=args.seed
            )
        finally:
            conn.close()
    except psycopg2.Error as exc:
        print(f"error: {str(exc).strip()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    print(
        " ".join(f"{k}={v}" for k, v in sorted(counts.items())) + f" total={sum(counts.values())}"
    )
    return 0
