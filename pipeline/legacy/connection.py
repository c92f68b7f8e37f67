"""Connections to the legacy database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
from psycopg2.extensions import connection as Connection
from psycopg2.extensions import cursor as Cursor

from pipeline.settings import Settings


def connect(
    settings: Settings, *, autocommit: bool = False, application: str = "ordersync"
) -> Connection:
    """A new psycopg2 connection to the legacy database named by ``settings.source.dsn``."""
    conn = psycopg2.connect(settings.source.dsn.reveal(), application_name=application)
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
