"""``ordersync verify``: prove against Zoho that every order is there once, with our values.

Exports the module with Bulk Read, compares it with the legacy table (see pipeline/verify.py),
and prints what differs. The credit cost is printed before anything is sent.

Exit codes: 0 Zoho matches the legacy table, 3 differences were found (and, with ``--repair``,
re-queued where the legacy value wins), 1 settings, database, Zoho or budget error, 2 ordersync
is not installed on the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import psycopg2

from cli.commands.db import load
from pipeline import verify
from pipeline.legacy import schema
from pipeline.legacy.connection import connect
from pipeline.zoho.client import ZohoClient
from pipeline.zoho.errors import ZohoError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_NOT_INSTALLED = 2
EXIT_DIFFERENCES = 3


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
    return value


def register(subparsers: Any) -> None:
    """Add ``verify`` to the ``ordersync`` parser."""
    parser = subparsers.add_parser(
        "verify",
        help="read Zoho back (Bulk Read) and compare it with the legacy table",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--repair", action="store_true",
                        help="re-queue missing rows and rows whose legacy value wins")
    parser.add_argument("--zoho-wins", action="append", default=[], metavar="FIELD",
                        help="keep (and report) Zoho edits of FIELD instead of overwriting them;"
                             " repeatable")
    parser.add_argument("--estimate", action="store_true",
                        help="print the credit cost and exit without calling Zoho")
    parser.add_argument("--poll", type=_positive, default=2.0, metavar="S",
                        help="seconds between job status checks (default 2)")
    parser.add_argument("--timeout", type=_positive, default=3600.0, metavar="S",
                        help="give up waiting after S seconds (default 3600)")
    parser.set_defaults(func=run)


def format_report(v: verify.Verification, estimate: int) -> str:
    r = v.report or {}
    c = r.get("counts", {})
    lines = [
        f"verification {v.id}: {r.get('zoho_records', 0)} Zoho records, "
        f"{r.get('legacy_rows', 0)} legacy rows ({r.get('pending_rows', 0)} pending, not compared)",
        f"  credits: about {estimate}",
        f"  missing in Zoho:      {c.get('missing', 0)}",
        f"  duplicated parent_id: {c.get('duplicates', 0)}",
        f"  no legacy row:        {c.get('strays', 0)}",
        f"  fields that differ:   {c.get('differences', 0)} in {c.get('differing_records', 0)}"
        f" records ({c.get('drift', 0)} edited in Zoho)",
    ]
    for key in r.get("missing", [])[:20]:
        lines.append(f"    missing {key}")
    for key, ids in list(r.get("duplicates", {}).items())[:20]:
        lines.append(f"    duplicate {key}: {', '.join(ids)}")
    for s in r.get("strays", [])[:20]:
        lines.append(f"    stray {s['zoho_id']} (parent_id {s['parent_id']!r})")
    for d in r.get("differences", [])[:50]:
        tag = f" drift, {d['winner']} wins" if d["drift"] else ""
        lines.append(f"    {d['parent_id']} {d['field']}: legacy {d['legacy']!r}, "
                     f"zoho {d['zoho']!r}{tag}")
    if v.repair:
        lines.append(f"  re-queued for the next sync: {v.requeued}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Verify (text or ``--json``); see the module docstring for exit codes."""
    settings = load(args)
    if settings is None:
        return EXIT_ERROR
    try:
        installed = schema.status(settings)
        if not installed["installed"]:
            print(f"error: ordersync is not installed on {installed['table']}:"
                  " run `ordersync db install`", file=sys.stderr)
            return EXIT_NOT_INSTALLED
        conn = connect(settings, application="ordersync-verify")
    except psycopg2.Error as exc:
        print(f"error: {str(exc).strip()}", file=sys.stderr)
        return EXIT_ERROR
    try:
        with conn:
            rows = verify.legacy_count(conn, settings)
        estimate = verify.estimate_credits(rows)
        if args.estimate:
            doc = {"legacy_rows": rows, "jobs": verify.pages_for(rows),
                   "credits_estimate": estimate}
            print(json.dumps(doc) if args.json else
                  f"verify of {rows:,} rows: {doc['jobs']} read job(s), about {estimate} credits")
            return EXIT_OK
        if not args.json:
            print(f"verify: {rows:,} legacy rows, {verify.pages_for(rows)} read job(s), "
                  f"about {estimate} credits", flush=True)
        client = ZohoClient.from_settings(settings)
        try:
            v = verify.run_to_end(conn, settings, client, repair=args.repair,
                                  zoho_wins=args.zoho_wins, poll=args.poll, timeout=args.timeout)
        finally:
            client.close()
    except (ZohoError, TimeoutError, ValueError, psycopg2.Error) as exc:
        print(f"error: verify failed: {exc}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        conn.close()
    if v.state is not verify.VerifyState.DONE:
        print(f"error: verification {v.id} {v.state.value}: {v.error}", file=sys.stderr)
        return EXIT_ERROR
    print(json.dumps(v.as_dict(), indent=2) if args.json else format_report(v, estimate))
    clean = not any((v.report or {}).get("counts", {}).get(k) for k in
                    ("missing", "duplicates", "strays", "differences"))
    return EXIT_OK if clean else EXIT_DIFFERENCES
