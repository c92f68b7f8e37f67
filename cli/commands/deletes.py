"""``ordersync deletes``: delete the Zoho records of deleted legacy rows (opt-in).

Needs ``deletes = true`` under ``[sync]`` (and ``ordersync db install`` after turning it on:
that installs the delete trigger that writes tombstones). Prints what it will do and cost before
it sends anything; ``--dry-run`` stops there. A run above ``max_deletes`` is refused whole,
nothing sent; ``--allow N`` lifts the cap for this run only.

Exit codes: 0 done (or nothing to do), 1 settings, database, Zoho or budget error, 2 deletes
are off or ordersync is not installed, 3 refused above the cap, 4 Zoho refused some ids.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import psycopg2

from cli.commands.db import load
from pipeline import deletes
from pipeline.legacy import schema
from pipeline.legacy.connection import connect
from pipeline.zoho.client import ZohoClient
from pipeline.zoho.errors import ZohoError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_OFF = 2
EXIT_OVER_CAP = 3
EXIT_REFUSED = 4


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {text}")
    return value


def register(subparsers: Any) -> None:
    """Add ``deletes`` to the ``ordersync`` parser."""
    parser = subparsers.add_parser(
        "deletes",
        help="delete the Zoho records of deleted legacy rows (opt-in: sync.deletes)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--dry-run", action="store_true",
                        help="print what would be deleted and its credits; send nothing")
    parser.add_argument("--allow", type=_count, metavar="N",
                        help="this run may delete up to N records (instead of max_deletes)")
    parser.add_argument("--retry", action="store_true",
                        help="release ids Zoho refused max_attempts times, then run")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = load(args)
    if settings is None:
        return EXIT_ERROR
    if not settings.deletes:
        print("error: deletes are off: set deletes = true under [sync], then run"
              " `ordersync db install` (it adds the delete trigger)", file=sys.stderr)
        return EXIT_OFF
    try:
        installed = schema.status(settings)
        if not installed["installed"]:
            print(f"error: ordersync is not installed on {installed['table']}:"
                  " run `ordersync db install`", file=sys.stderr)
            return EXIT_OFF
        conn = connect(settings, application="ordersync-deletes")
    except psycopg2.Error as exc:
        print(f"error: {str(exc).strip()}", file=sys.stderr)
        return EXIT_ERROR
    try:
        if args.retry and not args.dry_run:
            released = deletes.retry(conn, settings)
            if not args.json:
                print(f"released {released} refused ids", flush=True)
        if args.dry_run:
            report = deletes.run(conn, settings, None, dry_run=True, allow=args.allow)
        else:
            client = ZohoClient.from_settings(settings)
            try:
                report = deletes.run(conn, settings, client, allow=args.allow)
            finally:
                client.close()
    except (ZohoError, ValueError, psycopg2.Error) as exc:
        print(f"error: deletes failed: {exc}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        conn.close()
    print(json.dumps(report.as_dict(), indent=2) if args.json
          else "\n".join(deletes.explain(report)))
    if report.refused:
        return EXIT_OVER_CAP
    return EXIT_REFUSED if report.failed else EXIT_OK
