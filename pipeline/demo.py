"""Demo data like a real legacy ``orders`` table, and an application that keeps editing it.

The table carries the columns of ``DEFAULT_MAPPING`` plus columns Zoho never sees
(``updated_at``, ``warehouse_note``, ``internal_flags``), so that updates which must not cost a
credit happen all the time, as in a real shop. Seeding runs in SQL (``generate_series``) and is
deterministic for a given seed; bad rows are the kinds Zoho rejects.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum

from psycopg2 import sql
from psycopg2.extensions import connection as Connection

from pipeline.settings import Settings

STATUSES = ("New", "Paid", "Shipped", "Delivered", "Cancelled", "Refunded")
CURRENCIES = ("USD", "EUR", "GBP", "INR", "JPY")
FIRST_NAMES = (
    "Asha",
    "José",
    "Zoë",
    "Liam",
    "Mei",
    "Olu",
    "Ingrid",
    "Ravi",
    "Søren",
    "Chloé",
    "Yuki",
    "Amara",
    "Tomás",
    "Fatima",
    "Nikolai",
    "Grace",
)
EMAIL_FIRST = (
    "asha",
    "jose",
    "zoe",
    "liam",
    "mei",
    "olu",
    "ingrid",
    "ravi",
    "soren",
    "chloe",
    "yuki",
    "amara",
    "tomas",
    "fatima",
    "nikolai",
    "grace",
)
LAST_NAMES = (
    "Okafor",
    "García",
    "Müller",
    "O'Brien",
    "Nakamura",
    "Patel",
    "Ivanova",
    "Smith",
    "Dubois",
    "Kowalski",
    "Chen",
    "Haddad",
    "Larsen",
    "Costa",
)
NOTES = (
    "Leave at the door",
    "Gift wrap, please",
    'Customer said "urgent", call first',
    "Ring twice;\nback entrance",
    "Fragile: glass, handle with care",
    "Deliver after 6pm, not before",
    "Größe: M — bitte prüfen",
    "配達前に電話してください",
    "Split shipment, part 1 of 2",
    "Invoice to: ACME, Ltd., 12 High St.",
)


class BadKind(StrEnum):
    """Rows Zoho rejects."""

    BAD_EMAIL = "bad_email"  # INVALID_DATA on Email
    LONG_NAME = "long_name"  # Customer_Name over 100 characters
    UNKNOWN_STATUS = "unknown_status"  # not a picklist value
    MISSING_ORDER_NUMBER = "missing_order_number"  # mandatory Name is empty


def _array(values: tuple[str, ...]) -> sql.Composable:
    return sql.SQL("(ARRAY[{}]::text[])").format(sql.SQL(", ").join(sql.Literal(v) for v in values))


def create_table(conn: Connection, settings: Settings, *, drop: bool = False) -> None:
    """Create the demo legacy table (``settings.source`` schema/table) if it does not exist."""
    table = sql.Identifier(settings.source.schema, settings.source.table)
    with conn.cursor() as cur:
        if drop:
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
        cur.execute(
            sql.SQL(
                """CREATE TABLE IF NOT EXISTS {} (
                    id bigint PRIMARY KEY,
                    order_number text,
                    customer_name text,
                    customer_email text,
                    status text,
                    amount numeric(12, 2),
                    currency text,
                    quantity integer,
                    order_date date,
                    shipped_at timestamptz,
                    is_gift boolean,
                    notes text,
                    updated_at timestamptz NOT NULL DEFAULT now(),
                    warehouse_note text,
                    internal_flags integer NOT NULL DEFAULT 0
                )"""
            ).format(table)
        )


def _row_select() -> sql.Composable:
    """SELECT producing demo rows for ``g`` in ``generate_series(%(first)s, %(last)s)``."""
    return sql.SQL(
        """SELECT g, 'SO-' || lpad(g::text, 8, '0'),
                  {first}[1 + (g * 7) %% {nf}] || ' ' || {last}[1 + (g * 13) %% {nl}],
                  {efirst}[1 + (g * 7) %% {nf}] || '.' || g || '@example.com',
                  {statuses}[1 + floor(random() * {ns})::int],
                  round((1 + random() * 1999)::numeric, 2),
                  {currencies}[1 + floor(random() * {nc})::int],
                  1 + floor(random() * 9)::int,
                  d,
                  CASE WHEN random() < 0.6
                       THEN d + make_interval(hours => 8 + floor(random() * 72)::int,
                                              mins => floor(random() * 60)::int) END,
                  random() < 0.1,
                  CASE WHEN random() < 0.4 THEN {notes}[1 + floor(random() * {nn})::int] END,
                  now()
           FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g,
                LATERAL (SELECT date '2021-01-01' + floor(random() * 1400)::int
                                + (g - g)::int AS d) AS od"""
    ).format(
        first=_array(FIRST_NAMES),
        efirst=_array(EMAIL_FIRST),
        nf=sql.Literal(len(FIRST_NAMES)),
        last=_array(LAST_NAMES),
        nl=sql.Literal(len(LAST_NAMES)),
        statuses=_array(STATUSES),
        ns=sql.Literal(len(STATUSES)),
        currencies=_array(CURRENCIES),
        nc=sql.Literal(len(CURRENCIES)),
        notes=_array(NOTES),
        nn=sql.Literal(len(NOTES)),
    )


@dataclass(frozen=True)
class SeedResult:
    first_id: int
    last_id: int
    bad_rows: dict[int, BadKind]
    seconds: float


def bad_row_ids(first: int, rows: int, bad_rows: int, seed: int) -> dict[int, BadKind]:
    """Which of the ids ``first .. first+rows-1`` are bad, and how: spread evenly, from ``seed``."""
    if bad_rows <= 0 or rows <= 0:
        return {}
    bad_rows = min(bad_rows, rows)
    step = rows / bad_rows
    offset = seed % max(1, int(step))
    kinds = list(BadKind)
    return {first + int(k * step) + offset: kinds[(k + seed) % len(kinds)] for k in range(bad_rows)}


def seed(
    conn: Connection, settings: Settings, rows: int, *, bad_rows: int = 0, seed: int = 42
) -> SeedResult:
    """Append ``rows`` demo orders (ids after the current maximum) in one transaction.

    ``bad_rows`` of them get a defect Zoho rejects (cycling through :class:`BadKind`). The same
    seed on an empty table gives the same rows.
    """
    started = time.perf_counter()
    table = sql.Identifier(settings.source.schema, settings.source.table)
    with conn, conn.cursor() as cur:
        create_table(conn, settings)
        cur.execute(sql.SQL("SELECT coalesce(max(id), 0) FROM {}").format(table))
        first = int(cur.fetchone()[0]) + 1  # type: ignore[index]
        last = first + rows - 1
        cur.execute("SELECT setseed(%s)", (((seed % 1000) / 1000.0),))
        if rows > 0:
            cur.execute(
                sql.SQL(
                    "INSERT INTO {} (id, order_number, customer_name, customer_email, status,"
                    " amount, currency, quantity, order_date, shipped_at, is_gift, notes,"
                    " updated_at) "
                ).format(table)
                + _row_select(),
                {"first": first, "last": last},
            )
        bad = bad_row_ids(first, rows, bad_rows, seed)
        by_kind: dict[BadKind, list[int]] = {}
        for row_id, kind in bad.items():
            by_kind.setdefault(kind, []).append(row_id)
        spoilers = {
            BadKind.BAD_EMAIL: "customer_email = 'not-an-email@@example'",
            BadKind.LONG_NAME: "customer_name = repeat('Verylongname ', 10)",
            BadKind.UNKNOWN_STATUS: "status = 'Lost in transit'",
            BadKind.MISSING_ORDER_NUMBER: "order_number = NULL",
        }
        for kind, ids in by_kind.items():
            cur.execute(
                sql.SQL("UPDATE {} SET " + spoilers[kind] + " WHERE id = ANY(%s)").format(table),
                (ids,),
            )
        cur.execute(sql.SQL("ANALYZE {}").format(table))
    return SeedResult(first, last, bad, time.perf_counter() - started)


class ChurnOp(StrEnum):
    INSERT = "insert"
    MAPPED_UPDATE = "mapped_update"  # Zoho sees it: the row becomes pending
    UNMAPPED_UPDATE = "unmapped_update"  # Zoho does not: nothing changes for the sync


def churn(
    conn: Connection,
    settings: Settings,
    *,
    rate: float,
    seconds: float,
    seed: int = 7,
    mix: tuple[float, float, float] = (0.2, 0.5, 0.3),
) -> Counter[str]:
    """Behave like the legacy application for ``seconds``: ``rate`` single-row writes a second.

    ``mix`` weighs inserts, updates of mapped columns, updates of unmapped columns only. Each
    write is its own transaction. Returns the count of each kind of write.
    """
    rng = random.Random(seed)
    table = sql.Identifier(settings.source.schema, settings.source.table)
    counts: Counter[str] = Counter()
    conn.autocommit = True
    with conn.cursor() as cur:
        create_table(conn, settings)
        cur.execute(
            sql.SQL("SELECT coalesce(min(id), 1), coalesce(max(id), 0) FROM {}").format(table)
        )
        low, high = cur.fetchone()  # type: ignore[misc]
        insert = (
            sql.SQL(
                "INSERT INTO {} (id, order_number, customer_name, customer_email, status,"
                " amount, currency, quantity, order_date, shipped_at, is_gift, notes,"
                " updated_at) "
            ).format(table)
            + _row_select()
        )
        mapped = [
            sql.SQL("UPDATE {} SET status = %s, updated_at = now() WHERE id = %s").format(table),
            sql.SQL("UPDATE {} SET amount = %s, updated_at = now() WHERE id = %s").format(table),
            sql.SQL("UPDATE {} SET notes = %s, updated_at = now() WHERE id = %s").format(table),
        ]
        unmapped = sql.SQL(
            "UPDATE {} SET updated_at = now(), warehouse_note = %s,"
            " internal_flags = internal_flags + 1 WHERE id = %s"
        ).format(table)
        ops = list(ChurnOp)
        interval = 1.0 / rate if rate > 0 else 0.0
        start = time.monotonic()
        next_at = start
        while time.monotonic() - start < seconds:
            op = rng.choices(ops, weights=mix)[0]
            if op is ChurnOp.INSERT or high < low:
                high += 1
                cur.execute(insert, {"first": high, "last": high})
                op = ChurnOp.INSERT
            elif op is ChurnOp.MAPPED_UPDATE:
                which = rng.randrange(3)
                value: object = (
                    rng.choice(STATUSES),
                    f"{rng.uniform(1, 2000):.2f}",
                    rng.choice(NOTES),
                )[which]
                cur.execute(mapped[which], (value, rng.randint(low, high)))
            else:
                cur.execute(unmapped, (f"bin {rng.randint(1, 400)}", rng.randint(low, high)))
            counts[op.value] += 1
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    return counts
