"""``ordersync.probe``: a no-business task that proves the plumbing (tests, smoke checks).

It writes to two tables in a schema of a PostgreSQL database it is given:

``<schema>.probe_attempts``  one row per execution (key, task id, retries, pid, started/finished)
``<schema>.probe_effects``   the effect, once per key (``INSERT … ON CONFLICT DO NOTHING``)

so a test sees through PostgreSQL how often a message ran and that its effect happened once.
Create the tables with :func:`install_probe_tables`. The DSN travels in the message, so it must
not carry a password (refused).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import parse_dsn

from tasks.app import app
from tasks.base import OrdersyncTask

logger = logging.getLogger(__name__)

PROBE_TABLES_SQL = """
CREATE TABLE IF NOT EXISTS {schema}.probe_attempts (
    n           bigserial PRIMARY KEY,
    key         text NOT NULL,
    task_id     text NOT NULL,
    retries     integer NOT NULL,
    pid         integer NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz
);
CREATE TABLE IF NOT EXISTS {schema}.probe_effects (
    key        text PRIMARY KEY,
    task_id    text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
"""


class ProbeFatalError(ValueError):
    """An injected failure outside the transient family: never retried."""


def install_probe_tables(dsn: str, schema: str) -> None:
    """Create ``schema`` and the probe's two tables in it (idempotent)."""
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        cur.execute(sql.SQL(PROBE_TABLES_SQL).format(schema=sql.Identifier(schema)))
    conn.close()


def _connect(dsn: str) -> Any:
    if parse_dsn(dsn).get("password"):
        raise ProbeFatalError("the probe refuses a DSN with a password in a task argument")
    conn = psycopg2.connect(dsn, connect_timeout=5, application_name="ordersync.probe")
    conn.autocommit = True
    return conn


@app.task(bind=True, name="ordersync.probe", max_retries=3, retry_backoff=1, retry_backoff_max=2)
def probe(
    self: OrdersyncTask,
    dsn: str,
    schema: str,
    key: str,
    *,
    fail_times: int = 0,
    fatal: bool = False,
    gate: int | None = None,
    polls: int = 0,
    poll_countdown: float = 1.0,
    run_id: str | None = None,
    batch_id: str | None = None,
) -> dict[str, Any]:
    """Record an attempt; fail the first ``fail_times`` attempts (transient, or ``fatal``);
    re-schedule itself ``polls`` times; apply the effect once; wait on advisory lock ``gate``
    (held by a test that wants to kill the worker mid-task); mark the attempt finished.
    """
    conn = _connect(dsn)
    try:
        cur = conn.cursor()
        attempts = sql.Identifier(schema, "probe_attempts")
        cur.execute(
            sql.SQL(
                "INSERT INTO {} (key, task_id, retries, pid) VALUES (%s, %s, %s, %s)"
                " RETURNING n, (SELECT count(*) FROM {} WHERE key = %s)"
            ).format(attempts, attempts),
            (key, self.request.id, self.request.retries, os.getpid(), key),
        )
        n, earlier = cur.fetchone()
        attempt = earlier + 1
        logger.info("probe %s attempt %s (retries=%s)", key, attempt, self.request.retries)
        if attempt <= fail_times:
            if fatal:
                raise ProbeFatalError(f"probe {key}: injected fatal failure {attempt}")
            raise psycopg2.OperationalError(f"probe {key}: injected transient failure {attempt}")
        if attempt <= polls:
            self.schedule_again(
                poll_countdown, dsn, schema, key,
                polls=polls, poll_countdown=poll_countdown, run_id=run_id, batch_id=batch_id,
            )
            cur.execute(
                sql.SQL("UPDATE {} SET finished_at = clock_timestamp() WHERE n = %s").format(
                    attempts
                ),
                (n,),
            )
            return {"key": key, "attempt": attempt, "rescheduled": True}
        cur.execute(
            sql.SQL(
                "INSERT INTO {} (key, task_id) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING"
            ).format(sql.Identifier(schema, "probe_effects")),
            (key, self.request.id),
        )
        applied = cur.rowcount == 1
        if gate is not None:
            cur.execute("SELECT pg_advisory_lock(%s)", (gate,))
            cur.execute("SELECT pg_advisory_unlock(%s)", (gate,))
        cur.execute(
            sql.SQL("UPDATE {} SET finished_at = clock_timestamp() WHERE n = %s").format(attempts),
            (n,),
        )
        logger.info("probe %s done: applied=%s", key, applied)
        return {"key": key, "attempt": attempt, "applied": applied}
    finally:
        conn.close()
