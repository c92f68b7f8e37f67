"""Connections to the legacy database."""

from __future__ import annotations

import psycopg2
from psycopg2.extensions import connection as Connection

from pipeline.settings import Settings


def connect(
    settings: Settings, *, autocommit: bool = False, application: str = "ordersync"
) -> Connection:
    """A new psycopg2 connection to the legacy database named by ``settings.source.dsn``."""
    conn = psycopg2.connect(settings.source.dsn.reveal(), application_name=application)
    conn.set_client_encoding("UTF8")  # the CSV and JSON we send are UTF-8, whatever the server's
    conn.autocommit = autocommit
    return conn
