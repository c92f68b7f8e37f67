"""Fixtures of the client tests: a private PostgreSQL database, a Redis key prefix per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg2
import pytest
import redis

from pipeline.zoho.credits import CreditLedger, ensure_schema

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
