"""Connections to the legacy database."""

from __future__ import annotations

import contextlib
import os
import time
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


# A kept connection idle longer than this is pinged before use (the server or a proxy may have
# dropped it); a fresh one costs the server ~10 ms of CPU, a ping ~0.1 ms.
PING_AFTER_IDLE = 30.0


class KeptConnection:
    """One connection kept between units of work in a process (a worker's tasks).

    A new connection per task costs PostgreSQL a backend start (~10 ms of CPU, measured with
    ``bench/initial_sync.py``) per task. :meth:`use` hands out the same connection each time
    and leaves it as a new one would be: any open transaction rolled back and every session
    advisory lock released (a batch's lock must not outlive its step), so a step never sees a
    previous one's state. A connection that failed, or whose server went away, is closed and
    replaced on the next use. Made per process: after a fork the child opens its own.
    """

    def __init__(self, application: str) -> None:
        self.application = application
        self._conn: Connection | None = None
        self._owner: tuple[int, str] | None = None  # (pid, dsn) it was opened for
        self._last_used = 0.0

    def _fresh(self, settings: Settings) -> Connection:
        dsn = settings.source.dsn.reveal()
        owner = (os.getpid(), dsn)
        conn = self._conn
        if conn is not None and (self._owner != owner or conn.closed):
            if self._owner is not None and self._owner[0] == owner[0]:
                conn.close()
            conn = None  # a parent's connection is never used (nor closed) across a fork
        if conn is not None and time.monotonic() - self._last_used > PING_AFTER_IDLE:
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
                conn.rollback()
            except psycopg2.Error:
                conn.close()
                conn = None
        if conn is None:
            conn = connect(settings, application=self.application)
            self._owner = owner
        self._conn = conn
        return conn

    @contextmanager
    def use(self, settings: Settings) -> Iterator[Connection]:
        """The kept connection for one unit of work; cleaned (or dropped) when the block ends."""
        conn = self._fresh(settings)
        try:
            yield conn
        except BaseException:
            self._clean(conn)
            raise
        self._clean(conn)

    def _clean(self, conn: Connection) -> None:
        self._last_used = time.monotonic()
        try:
            if not conn.closed:
                conn.rollback()  # whatever the step left uncommitted, as closing would
                conn.autocommit = False
                conn.isolation_level = None
                with conn.cursor() as cur:
                    cur.execute("SELECT pg_advisory_unlock_all()")
                conn.commit()
                return
        except psycopg2.Error:
            pass
        self.close()

    def close(self) -> None:
        """Close the kept connection (the next :meth:`use` opens a new one)."""
        if self._conn is not None and self._owner is not None and self._owner[0] == os.getpid():
            with contextlib.suppress(psycopg2.Error):
                self._conn.close()
        self._conn = None
        self._owner = None
