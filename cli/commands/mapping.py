"""``ordersync mapping suggest``: a ready ``[[mapping]]`` block for the legacy table and the
Zoho module (columns matched to fields by name and type; 1 credit to read the fields)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from typing import Any

import psycopg2

from cli.commands.db import load
from pipeline import mapping_check
from pipeline.legacy.connection import connect
from pipeline.settings import accepts_column_type, table_columns
from pipeline.zoho.client import ZohoClient
from pipeline.zoho.errors import ZohoError
from pipeline.zoho.fields import module_fields


def register(subparsers: Any) -> None:
    """Add ``mapping suggest`` to the ``ordersync`` parser."""
    parser = subparsers.add_parser("mapping", help="suggest a mapping from the table and Zoho")
    actions = parser.add_subparsers(dest="mapping_action", metavar="ACTION", required=True)
    suggest = actions.add_parser(
        "suggest", help="print a [[mapping]] block matching the table's columns to Zoho's fields"
    )
    suggest.add_argument("--table", metavar="T", help="legacy table (default: source.table)")
    suggest.add_argument("--module", metavar="M", help="Zoho module (default: zoho.module)")
    suggest.set_defaults(func=run_suggest)


def run_suggest(args: argparse.Namespace) -> int:
    """Print the suggested block; exit 1 when the table or the module cannot be read."""
    settings = load(args)
    if settings is None:
        return 1
    if args.table:
        settings = replace(settings, source=replace(settings.source, table=args.table))
    if args.module:
        settings = replace(settings, zoho=replace(settings.zoho, module=args.module))
    try:
        client = ZohoClient.from_settings(settings)
        try:
            fields = module_fields(client)
        finally:
            client.close()
    except (ZohoError, psycopg2.Error) as exc:
        print(f"error: cannot read the fields of {settings.zoho.module}: {exc}", file=sys.stderr)
        return 1
    try:
        conn = connect(settings, application="ordersync mapping suggest")
    except psycopg2.Error as exc:
        print(f"error: cannot connect to the database: {exc}", file=sys.stderr)
        return 1
    try:
        conn.set_session(readonly=True)
        columns = table_columns(conn, settings)
        if not columns:
            print(f"error: no table {settings.source.table!r} (or no columns)", file=sys.stderr)
            return 1
        print(
            f"# {settings.source.schema}.{settings.source.table} → Zoho {settings.zoho.module}"
            " (ordersync mapping suggest)"
        )
        print(
            mapping_check.suggest_mapping(
                columns,
                fields,
                key_column=settings.source.key_column,
                unique_field=settings.zoho.unique_field,
                accepts=accepts_column_type,
                distinct=mapping_check.distinct_reader(conn, settings),
            ),
            end="",
        )
    finally:
        conn.close()
    return 0
