"""Fixtures of the client tests: a private PostgreSQL database, a Redis key prefix per test."""

from __future__ import annotations

import csv
import io
import uuid
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import redis

from pipeline.settings import DEFAULT_MAPPING
from pipeline.zoho.client import ZohoClient
from pipeline.zoho.config import ZohoSettings
from pipeline.zoho.credits import CreditLedger, ensure_schema
from tests.fixtures.sim_settings import FAST_RETRIES, sim_zoho

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/1"


@pytest.fixture(scope="session")
def client_db() -> Iterator[str]:
    """DSN of a database created for this test session (dropped at the end)."""
    name = f"ordersync_client_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(PG_ADMIN)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def ledger_schema(client_db: str) -> str:
    """A fresh ledger schema (unique per test) with its credit_ledger table."""
    schema = f"ledger_{uuid.uuid4().hex[:10]}"
    conn = psycopg2.connect(client_db)
    try:
        with conn:
            ensure_schema(conn, schema)
    finally:
        conn.close()
    return schema


@pytest.fixture
def ledger(client_db: str, ledger_schema: str) -> Iterator[CreditLedger]:
    led = CreditLedger(client_db, ledger_schema, budget=50_000, reserve=1_000)
    yield led
    led.close()


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def prefix(redis_client: redis.Redis) -> Iterator[str]:
    """A Redis key prefix of this test alone; its keys are deleted afterwards."""
    value = f"test:client:{uuid.uuid4().hex}"
    yield value
    keys = list(redis_client.scan_iter(match=f"{value}:*", count=500))
    if keys:
        redis_client.delete(*keys)


# -- against a real zohosim process ------------------------------------------------------------


def sim_settings(sim: Any, prefix: str, **overrides: Any) -> ZohoSettings:
    """Client settings pointing every host at ``sim``, with fast retries for tests."""
    fast = {"read_timeout": 5.0, "max_retries": 4, "retry_backoff": 0.02,
            "retry_backoff_max": 0.1, "slot_wait": 30.0}  # fmt: skip
    return sim_zoho(sim, prefix, **{**FAST_RETRIES, **fast, **overrides})


@pytest.fixture
def make_client(
    zohosim: Any, prefix: str, redis_client: redis.Redis, ledger: CreditLedger
) -> Iterator[Callable[..., ZohoClient]]:
    """Build clients on the test's zohosim, Redis prefix and credit ledger."""
    made: list[ZohoClient] = []

    def make(**overrides: Any) -> ZohoClient:
        client = ZohoClient(
            sim_settings(zohosim, prefix, **overrides), redis=redis_client, credits=ledger
        )
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def order_row(key: str, **cells: str) -> list[str]:
    """A CSV row in DEFAULT_MAPPING column order, valid unless ``cells`` override it."""
    values = {
        "parent_id": key,
        "Name": f"SO-{key}",
        "Customer_Name": "Ann Example",
        "Email": "ann@example.com",
        "Order_Status": "Paid",
        "Amount": "1250.50",
        "Currency_Code": "EUR",
        "Quantity": "3",
        "Order_Date": "2024-05-01",
        "Shipped_At": "2024-05-02T13:45:00+05:30",
        "Is_Gift": "false",
        "Notes": "",
    }
    values.update(cells)
    return [values[name] for name in DEFAULT_MAPPING.api_names]


def write_zip(path: Path, rows: Sequence[Sequence[str]]) -> Path:
    """A bulk-write zip with one CSV: the mapping's header then ``rows``."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(DEFAULT_MAPPING.api_names)
    writer.writerows(rows)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("orders.csv", buf.getvalue())
    return path
