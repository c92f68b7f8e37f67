"""A throw-away PostgreSQL database with the probe's tables, per test module, and workers
that run the test-only ``ordersync.probe`` (``celery -A tests.fixtures.probe_app``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg2
import pytest
from psycopg2 import sql

from tests.fixtures.celery import PROBE_APP, CeleryTestEnv, cleanup_celery_env, make_celery_env
from tests.fixtures.probe_app import install_probe_tables

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True)
class ProbeDb:
    """Where ``ordersync.probe`` writes, and how a test reads it back."""

    dsn: str
    schema: str = "probe"

    def args(self, key: str) -> list[str]:
        """Positional arguments of ``ordersync.probe`` for ``key``."""
        return [self.dsn, self.schema, key]

    def query(self, statement: str, *params: object) -> list[tuple[object, ...]]:
        conn = psycopg2.connect(self.dsn)
        try:
            with conn, conn.cursor() as cur:
                cur.execute(statement.format(s=self.schema), params)
                return cur.fetchall()
        finally:
            conn.close()

    def attempts(self, key: str) -> list[tuple[object, ...]]:
        """``(task_id, retries, pid, started_at, finished_at)`` of each execution, in order."""
        return self.query(
            "SELECT task_id, retries, pid, started_at, finished_at FROM {s}.probe_attempts"
            " WHERE key = %s ORDER BY n",
            key,
        )

    def effects(self, key: str) -> list[tuple[object, ...]]:
        """``(task_id, applied_at)`` rows of the effect (at most one by construction)."""
        return self.query(
            "SELECT task_id, applied_at FROM {s}.probe_effects WHERE key = %s", key
        )


@pytest.fixture(scope="module")
def probe_db() -> Iterator[ProbeDb]:
    name = f"ordersync_tasks_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(ADMIN_DSN)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    db = ProbeDb(dsn=f"postgresql://postgres@127.0.0.1:5432/{name}")
    install_probe_tables(db.dsn, db.schema)
    yield db
    with admin.cursor() as cur:
        cur.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
    admin.close()


@pytest.fixture
def celery_env() -> Iterator[CeleryTestEnv]:
    """The shared ``celery_env``, but its workers also register ``ordersync.probe``."""
    env = make_celery_env(app=PROBE_APP)
    yield env
    cleanup_celery_env(env)
