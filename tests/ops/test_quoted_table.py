"""A table name from configuration with quotes and semicolons in it is only ever an identifier.

The legacy table is called ``or"ders; drop table x;--`` (configured through
``ORDERSYNC_SOURCE_TABLE``) in a database that also holds a table ``x``. ``demo seed``,
``db install`` (columns, triggers, pending index), ``config check``, a dry run, a real initial
sync through a worker into zohosim (keyset extraction, claims, marking), the change triggers
under ``demo churn``, ``db status``, ``status`` and ``errors`` all work on it, and ``x`` is still
there with its row.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from celery import Celery
from psycopg2 import sql

from pipeline.initial_sync import start_initial_run
from pipeline.legacy.connection import connect
from pipeline.settings import Settings, load_settings
from tests.fixtures.celery import CeleryTestEnv, WorkerFactory
from tests.ops.helpers import REPO, redis_cleanup, sync_env, wait_run_done
from zohosim.testing import SimProcess

TABLE = 'or"ders; drop table x;--'
ROWS, BAD_ROWS = 300, 6


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    return done


def _rows(settings: Settings, statement: sql.Composable) -> list[tuple[object, ...]]:
    conn = connect(settings)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


@pytest.mark.timeout(240)
def test_a_table_name_with_quotes_and_semicolons_is_handled_safely(
    fresh_db: Settings,
    zohosim: SimProcess,
    celery_env: CeleryTestEnv,
    celery_sender: Celery,
    celery_worker_factory: WorkerFactory,
    tmp_path: Path,
) -> None:
    prefix = f"test:ops:{uuid.uuid4().hex}"
    variables = sync_env(fresh_db, zohosim, prefix, ORDERSYNC_SOURCE_TABLE=TABLE)
    env = celery_env.env(**variables, PYTHONPATH=str(REPO))
    (tmp_path / "empty.toml").write_text("", encoding="utf-8")
    settings = load_settings(path=tmp_path / "empty.toml", env=variables)
    assert settings.source.table == TABLE
    _rows(settings, sql.SQL("CREATE TABLE x (note text); INSERT INTO x VALUES ('still here')"))
    table = sql.Identifier(settings.source.schema, TABLE)

    for args in (
        ("demo", "seed", "--rows", str(ROWS), "--bad-rows", str(BAD_ROWS)),
        ("db", "install"),
        ("config", "check"),
        ("sync", "initial", "--dry-run"),
    ):
        done = _cli(env, *args)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
    status = _cli(env, "db", "status")
    assert status.returncode == 0 and "installed" in status.stdout.lower(), status.stdout

    try:
        celery_worker_factory(extra_env=variables)
        run_id = start_initial_run(settings)
        celery_sender.send_task("ordersync.initial.start", kwargs={"run_id": run_id})
        progress = wait_run_done(settings, run_id)
    finally:
        redis_cleanup(prefix)
    assert progress["state"] == "done", progress
    ((synced, pending),) = _rows(
        settings,
        sql.SQL("SELECT count(*) FILTER (WHERE synced), count(*) FILTER (WHERE NOT synced) FROM {}")
        .format(table),
    )  # fmt: skip
    assert (synced, pending) == (ROWS - BAD_ROWS, BAD_ROWS)
    assert len(zohosim.admin.records()) == ROWS - BAD_ROWS

    # The change triggers on the oddly named table: churn makes rows pending again.
    churn = _cli(env, "demo", "churn", "--rate", "50", "--seconds", "1")
    assert churn.returncode == 0, churn.stderr
    ((pending_after,),) = _rows(settings, sql.SQL("SELECT count(*) FROM {} WHERE NOT synced")
                                .format(table))  # fmt: skip
    assert int(str(pending_after)) > BAD_ROWS
    for command in (["status"], ["errors"], ["db", "status"]):
        done = _cli(env, *command)
        assert done.returncode == 0, (command, done.stderr)

    assert _rows(settings, sql.SQL("SELECT note FROM x")) == [("still here",)]
    tables = {
        name
        for (name,) in _rows(
            settings, sql.SQL("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        )
    }
    assert tables == {"x", TABLE}
