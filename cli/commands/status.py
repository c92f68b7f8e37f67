"""``ordersync status``, ``errors`` and ``retry``: watching a sync and unblocking its rows.

Exit codes (all three): 0 done, 1 the settings do not load or the database cannot be read,
2 ordersync is not installed on the table (run ``ordersync db install``).
``--json`` documents have stable keys, listed in the README ("Monitoring from scripts").
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import psycopg2
from psycopg2.extensions import connection as Connection

from cli.commands.db import load
from pipeline import report
from pipeline.legacy import schema
from pipeline.legacy.connection import connect
from pipeline.retry import RetryResult, retry_row_errors
from pipeline.settings import Settings

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_NOT_INSTALLED = 2

T = TypeVar("T")


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {value}")
    return value


def register(subparsers: Any) -> None:
    """Add ``status``, ``errors`` and ``retry`` to the ``ordersync`` parser."""
    status = subparsers.add_parser(
        "status",
        help="runs, batches, pending rows, credits, and why work waits",
        description="Runs, batches by state, pending and quarantined rows, the oldest pending "
        "change, credits spent in 24 h and left, and why work waits.",
    )
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.add_argument(
        "--runs", type=_positive, default=report.DEFAULT_RUNS, metavar="N", help="latest N runs"
    )
    status.set_defaults(func=run_status)

    errors = subparsers.add_parser(
        "errors", help="rows Zoho refused: code, field, message, attempts, quarantine"
    )
    errors.add_argument("--code", metavar="C", help="only errors with Zoho code C")
    errors.add_argument("--quarantined", action="store_true", help="only rows held back")
    errors.add_argument(
        "--limit",
        type=_positive,
        default=report.DEFAULT_ERROR_LIMIT,
        metavar="N",
        help=f"show at most N rows (default {report.DEFAULT_ERROR_LIMIT})",
    )
    errors.add_argument("--json", action="store_true", help="print one JSON object")
    errors.set_defaults(func=run_errors)

    retry = subparsers.add_parser(
        "retry",
        help="send errored rows again (attempts restart; --quarantined releases held rows)",
    )
    retry.add_argument("--code", metavar="C", help="only rows whose error has Zoho code C")
    retry.add_argument(
        "--quarantined",
        "--force",
        dest="quarantined",
        action="store_true",
        help="also release held-back rows: refused by Zoho with a permanent code, or by our own"
        " field rules (ORDERSYNC_VALIDATION: sent once anyway, for a user who knows better than"
        " the validator); without it they stay held back until they change",
    )
    retry.add_argument("--json", action="store_true", help="print one JSON object")
    retry.set_defaults(func=run_retry)


def _with_db(
    args: argparse.Namespace, work: Callable[[Connection, Settings], T]
) -> tuple[int, T | None]:
    """Load settings, check the install, and run ``work`` in one transaction."""
    settings = load(args)
    if settings is None:
        return EXIT_ERROR, None
    try:
        installed = schema.status(settings)
        if not installed["installed"]:
            print(
                f"error: ordersync is not installed on {installed['table']}:"
                " run `ordersync db install`",
                file=sys.stderr,
            )
            return EXIT_NOT_INSTALLED, None
        conn = connect(settings, application="ordersync-cli")
        try:
            with conn:
                return EXIT_OK, work(conn, settings)
        finally:
            conn.close()
    except psycopg2.Error as exc:
        print(f"error: {str(exc).strip()}", file=sys.stderr)
        return EXIT_ERROR, None


def _show(
    args: argparse.Namespace,
    work: Callable[[Connection, Settings], dict[str, Any]],
    text: Callable[[dict[str, Any]], str],
) -> int:
    """Run ``work`` (:func:`_with_db`) and print its document as ``--json`` or as ``text``."""
    code, document = _with_db(args, work)
    if document is None:
        return code
    print(json.dumps(document, indent=2) if args.json else text(document))
    return EXIT_OK


def run_status(args: argparse.Namespace) -> int:
    """Print the status (text or ``--json``)."""
    return _show(args, lambda c, s: report.status(c, s, runs=args.runs), format_status)


def run_errors(args: argparse.Namespace) -> int:
    """Print the row errors (text or ``--json``)."""
    wanted = report.ErrorFilter(code=args.code, quarantined_only=args.quarantined, limit=args.limit)
    return _show(args, lambda c, s: report.row_errors(c, s, wanted), format_errors)


def run_retry(args: argparse.Namespace) -> int:
    """Reset the chosen row errors and print how many rows are back in play."""

    def work(conn: Connection, settings: Settings) -> RetryResult:
        return retry_row_errors(
            conn, settings, code=args.code, include_quarantined=args.quarantined
        )

    code, result = _with_db(args, work)
    if result is None:
        return code
    if args.json:
        print(
            json.dumps(
                {
                    "retried": result.retried,
                    "unquarantined": result.unquarantined,
                    "made_pending": result.made_pending,
                }
            )
        )
    else:
        print(
            f"retried {result.retried:,} row(s)"
            + (f" ({result.unquarantined:,} released from quarantine)" if args.quarantined else "")
            + (f"; {result.made_pending:,} made pending again" if result.made_pending else "")
        )
        if not args.quarantined:
            print("held-back rows wait until they change: add --force to send them anyway")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# Text layout
# ---------------------------------------------------------------------------------------------


def human_duration(seconds: float | None) -> str:
    """``None`` → ``-``; else the two largest units: ``45s``, ``3m20s``, ``2h05m``, ``3d04h``."""
    if seconds is None:
        return "-"
    whole = int(round(seconds))
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _when(value: str | None) -> str:
    if value is None:
        return "-"
    return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S%z")


def _of(done: int, total: int | None) -> str:
    return f"{done:,}" if total is None else f"{done:,} of {total:,}"


def _states(by_state: dict[str, int]) -> str:
    shown = [f"{state} {count:,}" for state, count in by_state.items() if count]
    return ", ".join(shown) or "none"


def format_status(document: dict[str, Any]) -> str:
    """The status document as text for people."""
    rows, credits = document["rows"], document["credits"]
    lines = [f"table {document['table']} → Zoho module {document['module']}"]
    lines.append("")
    lines.append(
        f"rows       {rows['total']:,} total, {rows['synced']:,} synced,"
        f" {rows['pending']:,} pending"
        f" ({rows['claimed']:,} in flight, {rows['quarantined']:,} quarantined),"
        f" {rows['in_error']:,} with errors"
    )
    unknown = document["pending_since_unknown"]
    lines.append(
        f"oldest pending change   {human_duration(document['oldest_pending_age_s'])}"
        + (
            f" ({unknown:,} row(s) pending since before install: change time unknown)"
            if unknown
            else ""
        )
    )
    lines.append(f"batches    {_states(document['batches'])}")
    lines.append(
        f"credits    {credits['spent_24h']:,} spent in the last 24 h; {credits['left']:,} left"
        f" (budget {credits['budget']:,} − reserve {credits['reserve']:,} − spent)"
    )
    next_plan = document["plan"]
    lines.append(
        f"next       {next_plan['rows']:,} row(s) can go now: {next_plan['bulk_jobs']} bulk"
        f" job(s) + {next_plan['upsert_calls']} upsert call(s), {next_plan['credits']:,} credits"
    )
    if document["waiting_reason"]:
        lines.append(f"waiting    {document['waiting_reason']}")
    lines.append("")
    if not document["runs"]:
        lines.append("runs       none yet")
    else:
        lines.append(
            f"{'run':>6}  {'kind':<9} {'state':<8} {'started':<24} {'reconciled':>21}  batches"
        )
        for run in document["runs"]:
            lines.append(
                f"{run['id']:>6}  {run['kind']:<9} {run['state']:<8} {_when(run['started_at']):<24}"
                f" {_of(run['rows_reconciled'], run['rows_total']):>21}  {_states(run['batches'])}"
                + (f"  error: {run['error']}" if run["error"] else "")
            )
            lines.append(
                f"{'':>6}  rows written {run['rows_written']:,}, refused by Zoho"
                f" {run['rows_refused']:,}, held back by the field rules"
                f" {run['rows_validated_out']:,} | credits {run['credits_spent']:,}"
                + (
                    f" (predicted {run['credits_predicted']:,}, minimum {run['credits_minimum']:,})"
                    if run["credits_predicted"] is not None
                    else ""
                )
            )
    return "\n".join(lines)


def format_errors(document: dict[str, Any]) -> str:
    """The errors document as a table for people."""
    if not document["total"]:
        return "no row errors"
    lines = [
        f"{document['total']:,} row error(s): "
        + ", ".join(f"{code} {count:,}" for code, count in document["by_code"].items())
    ]
    lines.append(
        f"{'row':>12}  {'code':<22} {'field':<16} {'tries':>5}  {'held':<4}  {'last seen':<24}"
        " message"
    )
    for e in document["errors"]:
        lines.append(
            f"{e['row_key']:>12}  {e['code']:<22} {e['field'] or '-':<16} {e['attempts']:>5}"
            f"  {'yes' if e['quarantined'] else 'no':<4}  {_when(e['last_seen']):<24}"
            f" {e['message'] or ''}"
        )
    if document["shown"] < document["total"]:
        lines.append(f"… {document['total'] - document['shown']:,} more (use --limit)")
    return "\n".join(lines)
