"""The credit ledger: every Zoho call's credits, reserved in PostgreSQL before the call is sent.

A reservation is checked against the rolling-24 h total under a transaction-scoped advisory
lock, so any number of processes and hosts share one budget. Settlement after the call:

* **kept** when the call may have been charged: success, any answer Zoho produced itself (4xx
  validation errors, 5xx), and an answer lost after sending (read timeout, drop). Zoho does not
  document whether failed calls are charged, so we count them: over-counting only makes us
  stop early, under-counting could spend the credits people need.
* **released** (credits set to 0, row kept for the record) when Zoho certainly did not charge:
  the connection was never made, Zoho answered 429 (zohosim charges a throttled call nothing),
  or the token was refused (401).

``X-API-CREDITS-REMAINING`` (sent by Zoho once half its own limit is used) is stored on the row
of the call that carried it; ``zoho_remaining()`` reads the latest value.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from pipeline.legacy.connection import connect_dsn
from pipeline.secret import Secret
from pipeline.zoho.errors import CreditBudgetExceeded

log = logging.getLogger(__name__)

WINDOW_SECONDS = 24 * 3600
_VALID_SCHEMA = "abcdefghijklmnopqrstuvwxyz0123456789_"


def _check_schema(name: str) -> str:
    if not name or not set(name.lower()) <= set(_VALID_SCHEMA) or name[0].isdigit():
        raise ValueError(f"invalid ledger schema name {name!r}")
    return name


def ensure_schema(conn: psycopg2.extensions.connection, ledger_schema: str = "ordersync") -> None:
    """Create (idempotently) ``<ledger_schema>.credit_ledger`` and its index.

    Runs in the caller's transaction and does not commit: call it inside ``with conn:``.
    """
    schema = sql.Identifier(_check_schema(ledger_schema))
    with conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
        cur.execute(
            sql.SQL(
                """
                CREATE TABLE IF NOT EXISTS {}.credit_ledger (
                    id bigserial PRIMARY KEY,
                    at timestamptz NOT NULL DEFAULT now(),
                    api text NOT NULL,
                    credits int NOT NULL,
                    records int NOT NULL DEFAULT 0,
                    run_id bigint NULL,
                    batch_id bigint NULL,
                    remaining int NULL,
                    outcome text NOT NULL DEFAULT 'reserved'
                )
                """
            ).format(schema)
        )
        cur.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS credit_ledger_at ON {}.credit_ledger (at)").format(
                schema
            )
        )


@dataclass(frozen=True)
class Reservation:
    """A row of the ledger holding ``credits`` for one call about to be sent."""

    id: int
    api: str
    credits: int


class CreditLedger:
    """Reserve credits before each Zoho call; refuse a call that would break the budget.

    ``budget`` is the rolling-24 h allowance (``daily_credit_budget``), ``reserve`` the part never
    spent by the sync (``credit_reserve``). Safe to share between threads; a forked child opens
    its own connection.
    """

    def __init__(
        self,
        dsn: str | Secret,
        ledger_schema: str = "ordersync",
        budget: int = 50_000,
        reserve: int = 1_000,
    ) -> None:
        self._dsn = dsn if isinstance(dsn, Secret) else Secret(dsn)
        self.schema = _check_schema(ledger_schema)
        self.budget = budget
        self.reserve_credits = reserve
        self._table = sql.SQL("{}.credit_ledger").format(sql.Identifier(self.schema))
        self._lock = threading.Lock()
        self._conn: psycopg2.extensions.connection | None = None
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return (
            f"CreditLedger(schema={self.schema!r}, budget={self.budget}, "
            f"reserve={self.reserve_credits})"
        )

    @property
    def limit(self) -> int:
        """Credits the sync may spend in any 24 h window: ``budget - reserve``."""
        return self.budget - self.reserve_credits

    @contextmanager
    def _cursor(self) -> Iterator[psycopg2.extensions.cursor]:
        with self._lock:
            if self._pid != os.getpid():  # forked: never share the parent's socket
                self._conn, self._pid = None, os.getpid()
            if self._conn is None or self._conn.closed:
                self._conn = connect_dsn(self._dsn)
            conn = self._conn
            try:
                with conn.cursor() as cur:
                    yield cur
                conn.commit()
            except BaseException:
                try:
                    conn.rollback()
                except psycopg2.Error:
                    self._conn = None
                raise

    def close(self) -> None:
        """Close this process's connection."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def reserve(
        self,
        api: str,
        credits: int,
        *,
        records: int = 0,
        run_id: int | None = None,
        batch_id: int | None = None,
    ) -> Reservation:
        """Record ``credits`` for a call about to be sent, or raise ``CreditBudgetExceeded``.

        Atomic across processes (``pg_advisory_xact_lock``): the rolling-24 h total plus
        ``credits`` must stay within ``budget - reserve``.
        """
        if credits < 0:
            raise ValueError("credits must be >= 0")
        params = {
            "lock": f"{self.schema}.credit_ledger",
            "window": WINDOW_SECONDS,
            "api": api,
            "credits": credits,
            "records": records,
            "run_id": run_id,
            "batch_id": batch_id,
            "limit": self.limit,
        }
        with self._cursor() as cur:
            # One round trip while the lock is held: lock, check and insert (only if it fits).
            # The ledger is a budget guard, not money: skipping the WAL flush at commit may lose
            # the last fraction of a second of reservations if PostgreSQL itself crashes.
            cur.execute(
                sql.SQL(
                    "SET LOCAL synchronous_commit = off; "
                    "SELECT pg_advisory_xact_lock(hashtext(%(lock)s)); "
                    "WITH spent AS (SELECT coalesce(sum(credits), 0) AS total FROM {t} "
                    "  WHERE at > now() - make_interval(secs => %(window)s)) "
                    "INSERT INTO {t} (api, credits, records, run_id, batch_id) "
                    "SELECT %(api)s, %(credits)s, %(records)s, %(run_id)s, %(batch_id)s "
                    "FROM spent WHERE %(credits)s = 0 OR spent.total + %(credits)s <= %(limit)s "
                    "RETURNING id"
                ).format(t=self._table),
                params,
            )
            row = cur.fetchone()
            if row is None:
                spent = self._spent(cur)
                retry_after = self._retry_after(cur, spent + credits - self.limit)
                raise CreditBudgetExceeded(
                    "CREDIT_BUDGET_EXCEEDED",
                    f"refused before sending {api}: it needs {credits} credits, {spent} of the "
                    f"{self.limit} the sync may spend in 24 h (budget {self.budget} - reserve "
                    f"{self.reserve_credits}) are used; retry in {retry_after:.0f} s",
                    {"api": api, "credits": credits, "spent_24h": spent, "limit": self.limit},
                    None,
                    retry_after,
                )
            row_id = int(row[0])
        return Reservation(row_id, api, credits)

    def _retry_after(self, cur: psycopg2.extensions.cursor, excess: int) -> float:
        """Seconds until ``excess`` credits have left the 24 h window."""
        cur.execute(
            sql.SQL(
                "SELECT extract(epoch FROM (at + make_interval(secs => %s) - now())) FROM ("
                "  SELECT at, sum(credits) OVER (ORDER BY at, id) AS running FROM {}"
                "  WHERE at > now() - make_interval(secs => %s)) w "
                "WHERE running >= %s ORDER BY at LIMIT 1"
            ).format(self._table),
            (WINDOW_SECONDS, WINDOW_SECONDS, excess),
        )
        row = cur.fetchone()
        return max(0.0, float(row[0])) if row else float(WINDOW_SECONDS)

    def settle(
        self, reservation: Reservation, *, charged: bool, remaining: int | None = None
    ) -> None:
        """Close a reservation: keep it (``charged``) or release it (credits 0).

        A kept reservation without ``remaining`` needs no write (its row already counts; its
        ``outcome`` stays ``reserved``); a released one gets ``outcome = 'released'``.

        ``remaining`` is Zoho's ``X-API-CREDITS-REMAINING`` when the answer carried it.
        """
        if charged and remaining is None:
            return  # the reservation row already counts: save a commit per call
        with self._cursor() as cur:
            cur.execute(
                sql.SQL(
                    "UPDATE {} SET credits = CASE WHEN %s THEN credits ELSE 0 END, "
                    "outcome = %s, remaining = coalesce(%s, remaining) WHERE id = %s"
                ).format(self._table),
                (charged, "charged" if charged else "released", remaining, reservation.id),
            )

    def note_remaining(self, api: str, remaining: int) -> None:
        """Record Zoho's ``X-API-CREDITS-REMAINING`` seen on a call that cost us nothing."""
        with self._cursor() as cur:
            cur.execute(
                sql.SQL(
                    "INSERT INTO {} (api, credits, remaining, outcome) VALUES (%s, 0, %s, 'noted')"
                ).format(self._table),
                (api, remaining),
            )

    def spent_24h(self) -> int:
        """Credits reserved or spent in the last 24 hours."""
        with self._cursor() as cur:
            return self._spent(cur)

    def _spent(self, cur: psycopg2.extensions.cursor) -> int:
        cur.execute(
            sql.SQL(
                "SELECT coalesce(sum(credits), 0) FROM {} "
                "WHERE at > now() - make_interval(secs => %s)"
            ).format(self._table),
            (WINDOW_SECONDS,),
        )
        return int(cur.fetchone()[0])

    def remaining(self) -> int:
        """Credits the sync may still spend now: ``budget - reserve - spent_24h()`` (≥ 0)."""
        return max(0, self.limit - self.spent_24h())

    def zoho_remaining(self) -> int | None:
        """The latest ``X-API-CREDITS-REMAINING`` Zoho sent in the last 24 h, if any."""
        with self._cursor() as cur:
            cur.execute(
                sql.SQL(
                    "SELECT remaining FROM {} WHERE remaining IS NOT NULL "
                    "AND at > now() - make_interval(secs => %s) ORDER BY id DESC LIMIT 1"
                ).format(self._table),
                (WINDOW_SECONDS,),
            )
            row = cur.fetchone()
            return int(row[0]) if row else None
