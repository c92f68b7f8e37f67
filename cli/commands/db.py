"""``ordersync db install | uninstall | status``: our sync state in the legacy database."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import psycopg2

from pipeline.legacy import schema
from pipeline.settings import ConfigError, Settings, load_settings


def register(subparsers: Any) -> None:
    """Add ``db install``, ``db uninstall`` and ``db status`` to the ``ordersync`` parser."""
    parser = subparsers.add_parser("db", help="install, remove or inspect the sync state")
    actions = parser.add_subparsers(dest="db_action", metavar="ACTION", required=True)
    install = actions.add_parser(
        "install", help="add sync columns, triggers, pending index and ledger (idempotent)"
    )
    install.set_defaults(func=run_install)
    uninstall = actions.add_parser("uninstall", help="remove everything install added")
    uninstall.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    uninstall.set_defaults(func=run_uninstall)
    status = actions.add_parser("status", help="what is installed, pending/synced/claimed counts")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.set_defaults(func=run_status)


def load(args: argparse.Namespace) -> Settings | None:
    """The settings for a command, or None (message printed) when they do not load."""
    try:
        return load_settings(getattr(args, "config", None))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def run_install(args: argparse.Namespace) -> int:
    """Install or update; exit 1 on a database error."""
    settings = load(args)
    if settings is None:
        return 1
    try:
        steps = schema.install(settings)
    except (psycopg2.Error, LookupError) as exc:
        print(f"error: install failed: {str(exc).strip()}", file=sys.stderr)
        return 1
    print("installed: " + (", ".join(steps) if steps else "nothing to do"))
    return 0


def run_uninstall(args: argparse.Namespace) -> int:
    """Remove everything, after confirmation unless ``--yes``."""
    settings = load(args)
    if settings is None:
        return 1
    src = settings.source
    if not args.yes:
        answer = input(
            f"Remove {src.synced_column}/{src.version_column}/{src.zoho_id_column} from"
            f" {src.schema}.{src.table} and drop schema {src.ledger_schema}? [y/N] "
        )
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing removed")
            return 1
    try:
        steps = schema.uninstall(settings)
    except psycopg2.Error as exc:
        print(f"error: uninstall failed: {str(exc).strip()}", file=sys.stderr)
        return 1
    print("removed: " + ", ".join(steps))
    return 0


def run_status(args: argparse.Namespace) -> int:
    """Print the status; exit 0 when installed and current, 2 when not installed, 1 on error."""
    settings = load(args)
    if settings is None:
        return 1
    try:
        report = schema.status(settings)
    except psycopg2.Error as exc:
        print(f"error: {str(exc).strip()}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"table            {report['table']}" + ("" if report["table_exists"] else " (missing)")
        )
        print(f"installed        {'yes' if report['installed'] else 'no'}")
        print(
            "sync columns     "
            + ", ".join(f"{c}={'yes' if ok else 'no'}" for c, ok in report["columns"].items())
        )
        print(
            f"triggers         {', '.join(report['triggers']) or 'none'}"
            + (
                ""
                if report["trigger_current"] or not report["triggers"]
                else " (mapping or options changed: run install)"
            )
            + (" (with NOTIFY)" if report.get("trigger_notifies") else "")
        )
        print(f"pending index    {report['pending_index']}")
        print(
            f"ledger           {report['ledger_schema']}: "
            + (", ".join(report["ledger_tables"]) or "none")
        )
        for name, value in report.get("counts", {}).items():
            print(f"{name:<16} {value:,}")
    if not report["installed"]:
        return 2
    return 0
