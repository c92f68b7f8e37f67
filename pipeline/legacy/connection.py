"""Connections to the legacy database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2
from psycopg2.extensions import connection as Connection
from psycopg2.extensions import cursor as Cursor

from pipeline.secret import Secret
from pipeline.settings import Settings
from pipeline.settings.load import MASK, dsn_error


def connect_dsn(dsn: Secret, **kwargs: Any) -> Connection:
    """``psycopg2.connect(dsn, **kwargs)``, but no error it raises repeats the DSN's password.

    libpq quotes the part of a connection string it cannot parse, and with a bare ``%`` in a URL's
    password that part is the password (``invalid percent-encoded token: "…"``): such a DSN is
    refused as :class:`ConfigError` naming the problem only. A connection error keeps its type
    (transient for the tasks) with any occurrence of the password masked.
    """
    try:
        return psycopg2.connect(dsn.reveal(), **kwargs)
    except psycopg2.ProgrammingError as exc:
        raise dsn_error(exc) from None
    except psycopg2.Error as exc:
        text = str(exc)
        password = dsn_password(dsn)
        if password and password in text:
            raise type(exc)(text.replace(password, MASK)) from None
        raise


def dsn_password(dsn: Secret) -> str:
    """The password a DSN carries ("" when none, or when the DSN does not parse)."""
    try:
        return psycopg2.extensions.parse_dsn(dsn.reveal()).get("password", "")
    except psycopg2.Error:
        return ""


def connect(
    settings: Settings, *, autocommit: bool = False, application: str = "ordersync"
) -> Connection:
    """A new psycopg2 connection to the legacy database named by ``settings.source.dsn``."""
    conn = connect_dsn(settings.source.dsn, application_name=application)
    conn.set_client_encoding("UTF8")  # the CSV and JSON we send are UTF-8, whatever the server's
    conn.autocommit = autocommit
    return conn


@contextmanager
def transaction(settings: Settings, application: str) -> Iterator[Cursor]:
    """A cursor in one transaction on a connection of its own: committed when the block ends,
    rolled back if it raises; the connection is closed either way."""
    conn = connect(settings, application=application)
    try:
        with conn, conn.cursor() as cur:
            yield cur
    finally:
        conn.close()
