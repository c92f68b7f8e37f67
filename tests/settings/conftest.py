"""A throwaway PostgreSQL database with a demo-like ``orders`` table, for config checks."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg2
import pytest

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"

ORDERS_DDL = """
CREATE TYPE order_state AS ENUM ('New', 'Paid');
CREATE TABLE orders (
    id bigint PRIMARY KEY,
    order_number varchar(120) NOT NULL,
    customer_name text,
    customer_email text,
    status text,
    amount numeric(12, 2),
    currency char(3),
    quantity integer,
    order_date date,
    shipped_at timestamptz,
    is_gift boolean,
    notes text,
    -- columns of other types, for the type checks
    legacy_date text,
    weight double precision,
    price_money money,
    created_local timestamp,
    small smallint,
    ref uuid,
    state order_state,
    extra jsonb,
    -- as `ordersync db install` leaves them
    synced boolean NOT NULL DEFAULT false,
    sync_version bigint NOT NULL DEFAULT 1,
    zoho_id text
);
INSERT INTO orders (id, order_number, amount, order_date)
VALUES (1, 'SO-1', 10.50, '2026-01-02'), (2, 'SO-2', 3.00, '2026-01-03');
"""


@pytest.fixture(scope="session")
def legacy_dsn() -> Iterator[str]:
    """DSN of a fresh database holding ``public.orders``; dropped afterwards."""
    name = f"ordersync_cfg_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(ADMIN_DSN)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        dsn = f"postgresql://postgres@127.0.0.1:5432/{name}"
        conn = psycopg2.connect(dsn)
        with conn, conn.cursor() as cur:
            cur.execute(ORDERS_DDL)
        conn.close()
        yield dsn
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def snapshot(dsn: str) -> tuple[object, ...]:
    """What a read-only check must leave untouched: schemas, tables, columns, triggers, rows."""
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT nspname FROM pg_namespace ORDER BY 1")
            schemas = cur.fetchall()
            cur.execute(
                "SELECT table_schema, table_name, column_name, data_type FROM "
                "information_schema.columns WHERE table_schema NOT IN "
                "('pg_catalog', 'information_schema') ORDER BY 1, 2, 3"
            )
            columns = cur.fetchall()
            cur.execute("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1")
            triggers = cur.fetchall()
            cur.execute("SELECT * FROM orders ORDER BY id")
            rows = cur.fetchall()
        return schemas, columns, triggers, rows
    finally:
        conn.close()
