"""Checks of loaded settings: ``check_settings`` (warnings and errors, no I/O) and
``check_database`` (read-only, against the legacy table).
"""

from __future__ import annotations

import contextlib
from typing import Any

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from pipeline.mapping import FieldType
from pipeline.secret import Secret
from pipeline.settings.load import (
    MASK,
    Problem,
    Severity,
    _suggest,
)
from pipeline.settings.model import Settings
from pipeline.zoho.endpoints import Endpoints


def check_settings(settings: Settings) -> list[Problem]:
    """Problems that do not stop loading but would stop or mislead a sync (``config check``).

    Missing Zoho credentials are only found here, not at load, because commands that touch
    the database alone (``db install``, ``demo seed``) do not need them. They are an error
    whether the URLs point at Zoho or at zohosim: both refuse a token refresh without them.
    Overriding some Zoho hosts but not all is a warning: the others stay at the data centre's.
    """
    zoho = settings.zoho
    endpoints = Endpoints.from_settings(zoho)
    problems = []
    for name in ("client_id", "client_secret", "refresh_token"):
        if not getattr(zoho, name):
            problems.append(
                Problem(
                    f"zoho.{name}",
                    f"is not set; the token refresh at {endpoints.token_url} needs it",
                )
            )
    hosts = {
        "accounts_url": endpoints.accounts,
        "api_url": endpoints.api,
        "upload_url": endpoints.upload,
    }
    if any(getattr(zoho, name) for name in hosts):
        for name, host in hosts.items():
            if getattr(zoho, name) is None:
                problems.append(
                    Problem(
                        f"zoho.{name}",
                        f"is not set while other Zoho hosts are: it stays at {host}",
                        Severity.WARNING,
                    )
                )
    return problems


# ---------------------------------------------------------------------------------------------
# Database checks (read-only)
# ---------------------------------------------------------------------------------------------

_TEXTS = frozenset({"text", "character varying", "character", "citext"})
_INTEGERS = frozenset({"smallint", "integer", "bigint"})
_FLOATS = frozenset({"real", "double precision"})
_TIMESTAMPS = frozenset({"timestamp without time zone", "timestamp with time zone"})
# Which PostgreSQL column types can feed each Zoho field type. Text fields take numbers and
# uuids rendered as text (the demo key is an integer feeding the text field parent_id);
# decimals take integers and numeric, exactly. Floats feed decimals with a warning: their
# binary rounding reaches Zoho as is. A timestamp does not feed a date field, nor text a date.
_ACCEPTED: dict[FieldType, frozenset[str]] = {
    FieldType.TEXT: _TEXTS | _INTEGERS | {"numeric", "uuid", "enum"},
    FieldType.MULTILINE: _TEXTS | _INTEGERS | {"numeric", "uuid", "enum"},
    FieldType.EMAIL: _TEXTS,
    FieldType.PICKLIST: _TEXTS | {"enum"},
    FieldType.INTEGER: _INTEGERS,
    FieldType.DECIMAL: _INTEGERS | {"numeric"},
    FieldType.CURRENCY: _INTEGERS | {"numeric"},
    FieldType.DATE: frozenset({"date"}),
    FieldType.DATETIME: _TIMESTAMPS,
    FieldType.BOOLEAN: frozenset({"boolean"}),
}
_TOLERATED: dict[FieldType, frozenset[str]] = {
    FieldType.DECIMAL: _FLOATS,
    FieldType.CURRENCY: _FLOATS,
}

_COLUMNS_SQL = """
SELECT c.column_name,
       CASE WHEN t.typtype = 'e' THEN 'enum'
            WHEN c.data_type = 'USER-DEFINED' THEN c.udt_name
            ELSE c.data_type END
FROM information_schema.columns AS c
LEFT JOIN pg_catalog.pg_namespace AS n ON n.nspname = c.udt_schema
LEFT JOIN pg_catalog.pg_type AS t ON t.typnamespace = n.oid AND t.typname = c.udt_name
WHERE c.table_schema = %s AND c.table_name = %s
ORDER BY c.ordinal_position
"""


def accepts_column_type(kind: FieldType, pg_type: str) -> bool:
    """Can a PostgreSQL column of ``pg_type`` feed a mapped field of ``kind``?"""
    return pg_type in _ACCEPTED[kind] or pg_type in _TOLERATED.get(kind, frozenset())


def table_columns(conn: Any, settings: Settings) -> list[tuple[str, str]]:
    """The source table's (column, type) pairs in table order (empty if there is no table)."""
    with conn.cursor() as cur:
        cur.execute(_COLUMNS_SQL, (settings.source.schema, settings.source.table))
        return [(str(name), str(kind)) for name, kind in cur.fetchall()]


def check_database(settings: Settings, connect_timeout: int = 5) -> list[Problem]:
    """Compare the configuration with the live legacy table; write nothing.

    Reports an unreachable database (``source.dsn``, never printing it), a missing schema or
    table, mapped columns the table lacks and column types a Zoho field type cannot carry.
    Runs in a read-only transaction that is rolled back.
    """
    source = settings.source
    try:
        conn = psycopg2.connect(
            source.dsn.reveal(),
            connect_timeout=connect_timeout,
            application_name="ordersync config check",
        )
    except psycopg2.ProgrammingError:
        return [Problem("source.dsn", "is not a valid PostgreSQL connection string")]
    except psycopg2.Error as exc:
        return [Problem("source.dsn", f"cannot connect to the database: {_scrub(exc, source.dsn)}")]
    try:
        conn.set_session(readonly=True)
        with conn.cursor() as cur:
            return _check_table(cur, settings)
    except psycopg2.Error as exc:
        return [Problem("source.table", f"cannot read the table: {_scrub(exc, source.dsn)}")]
    finally:
        conn.rollback()
        conn.close()


def _check_table(cur: Any, settings: Settings) -> list[Problem]:
    source = settings.source
    cur.execute("SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s", (source.schema,))
    if cur.fetchone() is None:
        return [Problem("source.schema", f"schema {source.schema!r} does not exist")]
    cur.execute(_COLUMNS_SQL, (source.schema, source.table))
    column_types: dict[str, str] = dict(cur.fetchall())
    if not column_types:
        return [Problem("source.table", f"table {source.schema}.{source.table} does not exist")]

    problems = []
    for i, spec in enumerate(settings.mapping.fields):
        pg_type = column_types.get(spec.column)
        if pg_type is None:
            problems.append(
                Problem(
                    f"mapping[{i}].column",
                    f"table {source.schema}.{source.table} has no column {spec.column!r}"
                    f"{_suggest(spec.column, column_types)}",
                )
            )
        elif pg_type in _TOLERATED.get(spec.type, ()):
            problems.append(
                Problem(
                    f"mapping[{i}].type",
                    f"column {spec.column!r} is {pg_type}: its binary rounding reaches the "
                    f"{spec.type} field {spec.api_name!r}; numeric is exact",
                    Severity.WARNING,
                )
            )
        elif pg_type not in _ACCEPTED[spec.type]:
            problems.append(
                Problem(
                    f"mapping[{i}].type",
                    f"column {spec.column!r} is {pg_type}, which cannot feed the {spec.type} field "
                    f"{spec.api_name!r} (accepted: {', '.join(sorted(_ACCEPTED[spec.type]))})",
                )
            )
    for name in ("synced_column", "version_column", "zoho_id_column"):
        column = getattr(source, name)
        if column not in column_types:
            problems.append(
                Problem(
                    f"source.{name}",
                    f"column {column!r} is not on {source.schema}.{source.table} yet: "
                    "run `ordersync db install`",
                    Severity.WARNING,
                )
            )
    if not any(p.severity is Severity.ERROR for p in problems):
        # prove we may read what we will extract
        query = sql.SQL("SELECT {} FROM {}.{} LIMIT 0").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in settings.mapping.columns),
            sql.Identifier(source.schema),
            sql.Identifier(source.table),
        )
        cur.execute(query)
    return problems


def _scrub(exc: Exception, dsn: Secret) -> str:
    """The first line of a driver error, with the DSN and its password masked."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    secrets = [dsn.reveal()]
    with contextlib.suppress(psycopg2.Error):
        secrets.append(psycopg2.extensions.parse_dsn(dsn.reveal()).get("password", ""))
    for secret in filter(None, secrets):
        text = text.replace(secret, MASK)
    return text


# ---------------------------------------------------------------------------------------------
