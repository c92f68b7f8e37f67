"""Faster change detection (opt-in, ``sync.notify``): the change trigger NOTIFYs, a listener
wakes the near-real-time flush at once instead of at the next check.

With ``notify = true`` under ``[sync]``, ``ordersync db install`` makes the change trigger also
``pg_notify`` the install's channel (``Names.notify_channel``; PostgreSQL folds a transaction's
identical notifications into one, sent at commit). :class:`Listener` holds one connection that
LISTENs on it, waits in ``select()`` with a timeout, and calls ``wake`` (``ordersync listen``:
send ``ordersync.realtime.check`` with ``woken``) at the first notification, then at most once
per ``debounce`` seconds while notifications keep coming (a burst of commits is one wake, the
last of them never left behind). The payload is never read: a notification on the channel only
means "look". A lost connection is opened again (with back-off), followed by one wake for what
changed while nobody listened. The periodic check stays the safety net: a lost notification
costs latency, never a row.

The price is on the legacy application's side: every writing transaction that changes a mapped
column takes PostgreSQL's notify-queue lock at commit (measured in ``bench/notify_trigger.py``).
"""

from __future__ import annotations

import contextlib
import logging
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import connection as Connection

from pipeline.legacy.connection import connect
from pipeline.legacy.names import Names
from pipeline.settings import Settings

log = logging.getLogger(__name__)

DEBOUNCE = 0.5  # seconds between two wakes while notifications keep coming (≤ 2 calls a second)
TICK = 1.0  # seconds select() waits at most: how soon a stop request is seen
PING_EVERY = 30.0  # seconds of silence after which the connection is checked
RECONNECT_FIRST = 0.5  # seconds before the first reconnection attempt, doubled up to the max
RECONNECT_MAX = 10.0


class Debounce:
    """When to wake, given notification times: at once for the first, then at most once per
    ``interval`` (the wake owed by notifications inside the interval comes at its end). Pure:
    the caller passes the clock."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.pending = False
        self.last_wake = float("-inf")

    def notified(self) -> None:
        self.pending = True

    def wait(self, now: float, idle: float) -> float:
        """Seconds to wait for the next notification before :meth:`due` must be asked again."""
        if not self.pending:
            return idle
        return max(0.0, min(idle, self.last_wake + self.interval - now))

    def due(self, now: float) -> bool:
        """True (and the wake counted) when a wake is owed and the interval has passed."""
        if self.pending and now >= self.last_wake + self.interval:
            self.pending = False
            self.last_wake = now
            return True
        return False


@dataclass
class Listener:
    """LISTEN on the install's channel and call ``wake`` when notified (module docstring)."""

    settings: Settings
    wake: Callable[[], None]
    debounce: float = DEBOUNCE
    tick: float = TICK
    wakes: int = 0
    notifications: int = 0
    reconnects: int = 0

    @property
    def channel(self) -> str:
        return Names(self.settings).notify_channel

    def run(self, stop: threading.Event) -> None:
        """Listen until ``stop`` is set, reconnecting whenever the connection is lost."""
        delay = RECONNECT_FIRST
        while not stop.is_set():
            try:
                conn = self._listen_connection()
            except psycopg2.Error as exc:
                log.warning("listener: cannot connect (%s); again in %.1f s", exc, delay)
                stop.wait(delay)
                delay = min(delay * 2, RECONNECT_MAX)
                continue
            delay = RECONNECT_FIRST
            try:
                self._wake()  # whatever changed while nobody listened
                self._loop(conn, stop)
            except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                self.reconnects += 1
                log.warning("listener: connection lost (%s); reconnecting", exc)
            finally:
                with contextlib.suppress(psycopg2.Error):
                    conn.close()

    def _listen_connection(self) -> Connection:
        conn = connect(self.settings, autocommit=True, application="ordersync-listen")
        try:
            with conn.cursor() as cur:
                cur.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        except psycopg2.Error:
            conn.close()
            raise
        log.info("listener: listening on %s", self.channel)
        return conn

    def _loop(self, conn: Connection, stop: threading.Event) -> None:
        debounce = Debounce(self.debounce)
        quiet_since = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            readable, _, _ = select.select([conn], [], [], debounce.wait(now, self.tick))
            if readable:
                conn.poll()  # raises OperationalError once the server is gone
                got = len(conn.notifies)
                conn.notifies.clear()  # payloads are never read: any of ours means "look"
                if got:
                    self.notifications += got
                    debounce.notified()
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= PING_EVERY:
                with conn.cursor() as cur:  # a dead server shows here, not in select()
                    cur.execute("SELECT 1")
                quiet_since = time.monotonic()
            if debounce.due(time.monotonic()):
                self._wake()

    def _wake(self) -> None:
        try:
            self.wake()
        except Exception:  # the broker may be away: the periodic check is the safety net
            log.exception("listener: the wake-up could not be sent")
            return
        self.wakes += 1
