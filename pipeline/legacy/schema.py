"""``ordersync db install | uninstall | status``: our sync state in the legacy database.

Install adds, idempotently and safely on a live table of millions of rows:

* three columns on the legacy table: ``synced boolean NOT NULL DEFAULT false``,
  ``sync_version bigint NOT NULL DEFAULT 1``, ``zoho_id text`` (names from the settings), and
  ``sync_pending_since timestamptz`` (when the row became pending: near-real-time mode). On
  PostgreSQL ≥ 11 adding a column with a constant default only writes the catalog: no table
  rewrite; the ACCESS EXCLUSIVE lock lasts milliseconds and we wait at most ``lock_timeout``
  for it (and retry) rather than queue the application behind us;
* the change triggers, generated from the mapping (see :func:`trigger_statements`);
* a partial index on the key ``WHERE NOT synced``, built ``CONCURRENTLY`` (no write lock);
* the ledger schema (``pipeline.ledger``) and, if that module exists, the Zoho credit ledger.

Every step is its own short transaction. Re-running install with a changed mapping regenerates
the update trigger.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from psycopg2 import errors, sql
from psycopg2.extensions import connection as Connection

from pipeline import ledger
from pipeline.legacy.connection import connect
from pipeline.legacy.mark import row_error_counts
from pipeline.legacy.names import Names
from pipeline.settings import Settings
from pipeline.zoho import credits

log = logging.getLogger(__name__)

LOCK_TIMEOUT = "3s"
LOCK_RETRIES = 5


def _with_lock_retry(conn: Connection, step: str, work: Callable[[Any], None]) -> None:
    """Run ``work(cursor)`` in one short transaction; retry when a lock is not granted in time."""
    for attempt in range(1, LOCK_RETRIES + 1):
        try:
            with conn, conn.cursor() as cur:
                cur.execute(
                    sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT))
                )
                work(cur)
            return
        except errors.LockNotAvailable:
            log.warning("%s: lock not granted within %s (attempt %d)", step, LOCK_TIMEOUT, attempt)
            if attempt == LOCK_RETRIES:
                raise
            time.sleep(0.5 * attempt)


def mapped_columns(settings: Settings) -> tuple[str, ...]:
    """Legacy columns whose change is a change Zoho sees."""
    return settings.mapping.columns


def _signature(settings: Settings) -> str:
    # "v2": the triggers also keep the pending-since time (re-install regenerates older ones);
    # "deletes": the delete trigger is on (``sync.deletes``), so turning it on or off re-installs.
    # "notify": the change trigger also notifies (``sync.notify``).
    deletes = "; deletes" if settings.deletes else ""
    notify = "; notify" if settings.notify else ""
    return "ordersync v2 mapped columns: " + ",".join(mapped_columns(settings)) + deletes + notify


def delete_trigger_statements(settings: Settings) -> list[sql.Composable]:
    """``AFTER DELETE``: a tombstone with the row's key and Zoho id (``sync.deletes`` on), or
    no delete trigger at all (off: the default; deleting a legacy row then leaves Zoho alone)."""
    n = Names(settings)
    drop = sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
        sql.Identifier(n.delete_trigger_name), n.table
    )
    if not settings.deletes:
        return [drop]
    body = sql.SQL(
        "BEGIN INSERT INTO {tomb} (row_key, zoho_id) VALUES (OLD.{key}::text, OLD.{zoho_id})"
        " ON CONFLICT (row_key) DO UPDATE SET zoho_id = coalesce(EXCLUDED.zoho_id, {tomb}.zoho_id),"
        " deleted_at = now(), attempts = 0, last_error = NULL; RETURN OLD; END"
    ).format(tomb=n.ledger_table("tombstones"), key=n.key, zoho_id=n.zoho_id)
    return [
        sql.SQL(
            "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql"
            " AS $ordersync$ {} $ordersync$"
        ).format(n.delete_function, body),
        drop,
        sql.SQL("CREATE TRIGGER {} AFTER DELETE ON {} FOR EACH ROW EXECUTE FUNCTION {}()").format(
            sql.Identifier(n.delete_trigger_name), n.table, n.delete_function
        ),
    ]


def trigger_statements(settings: Settings) -> list[sql.Composable]:
    """The trigger functions and triggers for the current mapping.

    * ``BEFORE INSERT``: the new row is pending (``synced = false``).
    * ``BEFORE UPDATE … WHEN (mapped columns IS DISTINCT FROM before)``: ``synced = false`` and
      ``sync_version = OLD.sync_version + 1``. The ``WHEN`` clause compares only the mapped
      columns, so an update of unmapped columns or of the sync columns alone (our own marking)
      does not even call the function: it changes nothing, flips nothing back, costs no credit.
    * With ``sync.notify`` both functions also ``pg_notify`` the install's channel
      (``Names.notify_channel``) with an empty payload: PostgreSQL folds identical
      notifications of one transaction into one, delivered at commit (never for a rollback).
    """
    n = Names(settings)
    cols = mapped_columns(settings)
    old = sql.SQL(", ").join(sql.SQL("OLD.{}").format(sql.Identifier(c)) for c in cols)
    new = sql.SQL(", ").join(sql.SQL("NEW.{}").format(sql.Identifier(c)) for c in cols)
    notify = (
        sql.SQL("PERFORM pg_notify({}, ''); ").format(sql.Literal(n.notify_channel))
        if settings.notify
        else sql.SQL("")
    )
    insert_body = sql.SQL(
        "BEGIN NEW.{synced} := false; NEW.{since} := now(); {notify}RETURN NEW; END"
    ).format(synced=n.synced, since=n.pending_since, notify=notify)
    # pending-since: when the row went from synced to pending; further edits keep that time.
    update_body = sql.SQL(
        "BEGIN NEW.{since} := CASE WHEN OLD.{synced} THEN now() ELSE coalesce(OLD.{since}, now())"
        " END; NEW.{synced} := false; NEW.{version} := OLD.{version} + 1; {notify}RETURN NEW; END"
    ).format(synced=n.synced, version=n.version, since=n.pending_since, notify=notify)
    return [
        sql.SQL(
            "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql"
            " AS $ordersync$ {} $ordersync$"
        ).format(n.insert_function, insert_body),
        sql.SQL(
            "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql"
            " AS $ordersync$ {} $ordersync$"
        ).format(n.update_function, update_body),
        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
            sql.Identifier(n.insert_trigger_name), n.table
        ),
        sql.SQL("CREATE TRIGGER {} BEFORE INSERT ON {} FOR EACH ROW EXECUTE FUNCTION {}()").format(
            sql.Identifier(n.insert_trigger_name), n.table, n.insert_function
        ),
        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
            sql.Identifier(n.update_trigger_name), n.table
        ),
        sql.SQL(
            "CREATE TRIGGER {} BEFORE UPDATE ON {} FOR EACH ROW"
            " WHEN (ROW({}) IS DISTINCT FROM ROW({})) EXECUTE FUNCTION {}()"
        ).format(sql.Identifier(n.update_trigger_name), n.table, old, new, n.update_function),
        *delete_trigger_statements(settings),
        sql.SQL("COMMENT ON TRIGGER {} ON {} IS {}").format(
            sql.Identifier(n.update_trigger_name), n.table, sql.Literal(_signature(settings))
        ),
    ]


def _trigger_comment(cur: Any, settings: Settings) -> str | None:
    n = Names(settings)
    cur.execute(
        "SELECT obj_description(t.oid, 'pg_trigger') FROM pg_trigger t"
        " WHERE t.tgrelid = to_regclass(%s) AND t.tgname = %s",
        (n.qualified_table, n.update_trigger_name),
    )
    row = cur.fetchone()
    return None if row is None else row[0]


def notify_installed(settings: Settings) -> bool:
    """Whether the installed change trigger notifies (``sync.notify`` was on at the last
    ``db install``)."""
    conn = connect(settings, application="ordersync-cli")
    try:
        with conn, conn.cursor() as cur:
            return (_trigger_comment(cur, settings) or "").endswith("; notify")
    finally:
        conn.close()


def _index_state(cur: Any, settings: Settings) -> bool | None:
    """True: the pending index is valid; False: a failed concurrent build left it invalid."""
    n = Names(settings)
    cur.execute(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE i.indrelid = to_regclass(%s) AND c.relname = %s",
        (n.qualified_table, n.pending_index_name),
    )
    row = cur.fetchone()
    return None if row is None else bool(row[0])


def _drop_pending_index(cur: Any, settings: Settings) -> None:
    """Drop the pending-rows index (autocommit: CONCURRENTLY cannot run in a transaction)."""
    cur.execute(
        sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(
            sql.Identifier(settings.source.schema, Names(settings).pending_index_name)
        )
    )


def install(settings: Settings) -> list[str]:
    """Install (or bring up to date) everything ordersync needs; returns the steps it took."""
    n = Names(settings)
    done: list[str] = []
    conn = connect(settings, application="ordersync-install")
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s)", (n.qualified_table,))
            if cur.fetchone()[0] is None:  # type: ignore[index]
                raise LookupError(f"table {n.qualified_table} does not exist")

        def add_columns(cur: Any) -> None:
            cur.execute(
                sql.SQL(
                    "ALTER TABLE {t}"
                    " ADD COLUMN IF NOT EXISTS {s} boolean NOT NULL DEFAULT false,"
                    " ADD COLUMN IF NOT EXISTS {v} bigint NOT NULL DEFAULT 1,"
                    " ADD COLUMN IF NOT EXISTS {z} text,"
                    " ADD COLUMN IF NOT EXISTS {p} timestamptz"
                ).format(t=n.table, s=n.synced, v=n.version, z=n.zoho_id, p=n.pending_since)
            )

        _with_lock_retry(conn, "sync columns", add_columns)
        done.append("sync columns")

        def ledger_tables(cur: Any) -> None:
            ledger.ensure_tables(conn, settings)
            credits.ensure_schema(conn, settings.source.ledger_schema)
            from pipeline import verify  # its table is part of the ledger

            verify.ensure_table(conn, settings)

        _with_lock_retry(conn, "ledger", ledger_tables)
        done.append("ledger")

        with conn, conn.cursor() as cur:
            current = _trigger_comment(cur, settings)
        if current != _signature(settings):

            def triggers(cur: Any) -> None:
                for statement in trigger_statements(settings):
                    cur.execute(statement)

            _with_lock_retry(conn, "triggers", triggers)
            done.append("triggers")

        conn.autocommit = True
        with conn.cursor() as cur:
            state = _index_state(cur, settings)
            if state is False:
                _drop_pending_index(cur, settings)
            if state is not True:
                cur.execute(
                    sql.SQL(
                        "CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} ({}) WHERE NOT {}"
                    ).format(sql.Identifier(n.pending_index_name), n.table, n.key, n.synced)
                )
                done.append("pending index")
    finally:
        conn.close()
    log.info("install on %s: %s", n.qualified_table, ", ".join(done) or "nothing to do")
    return done


def uninstall(settings: Settings) -> list[str]:
    """Remove everything :func:`install` added (columns, triggers, index, ledger schema)."""
    n = Names(settings)
    done: list[str] = []
    conn = connect(settings, application="ordersync-uninstall")
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s)", (n.qualified_table,))
            table_exists = cur.fetchone()[0] is not None  # type: ignore[index]
        if table_exists:
            conn.autocommit = True
            with conn.cursor() as cur:
                if _index_state(cur, settings) is not None:
                    _drop_pending_index(cur, settings)
                    done.append("pending index")
            conn.autocommit = False

            def drop_on_table(cur: Any) -> None:
                for trigger in (n.insert_trigger_name, n.update_trigger_name,
                                n.delete_trigger_name):
                    cur.execute(
                        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
                            sql.Identifier(trigger), n.table
                        )
                    )
                cur.execute(
                    sql.SQL(
                        "ALTER TABLE {t} DROP COLUMN IF EXISTS {s}, DROP COLUMN IF EXISTS {v},"
                        " DROP COLUMN IF EXISTS {z}, DROP COLUMN IF EXISTS {p}"
                    ).format(t=n.table, s=n.synced, v=n.version, z=n.zoho_id, p=n.pending_since)
                )

            _with_lock_retry(conn, "triggers and columns", drop_on_table)
            done.append("triggers and sync columns")

        def drop_ledger(cur: Any) -> None:
            cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(n.ledger))

        _with_lock_retry(conn, "ledger", drop_ledger)
        done.append("ledger schema")
    finally:
        conn.close()
    log.info("uninstall on %s: %s", n.qualified_table, ", ".join(done))
    return done


def status(settings: Settings) -> dict[str, Any]:
    """What is installed; counts of pending, synced, claimed, quarantined rows, open batches."""
    n = Names(settings)
    src = settings.source
    conn = connect(settings, application="ordersync-status")
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", (n.qualified_table,))
            table = bool(cur.fetchone()[0])  # type: ignore[index]
            cur.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s)"
                " AND attnum > 0 AND NOT attisdropped",
                (n.qualified_table,),
            )
            present = {r[0] for r in cur.fetchall()}
            columns = {
                c: c in present for c in (src.synced_column, src.version_column, src.zoho_id_column)
            }
            cur.execute(
                "SELECT tgname FROM pg_trigger"
                " WHERE tgrelid = to_regclass(%s) AND tgname IN (%s, %s)",
                (n.qualified_table, n.insert_trigger_name, n.update_trigger_name),
            )
            triggers = sorted(r[0] for r in cur.fetchall())
            index = _index_state(cur, settings) if table else None
            comment = _trigger_comment(cur, settings) if table else None
            cur.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace"
                " WHERE s.nspname = %s AND c.relkind IN ('r', 'v') ORDER BY 1",
                (src.ledger_schema,),
            )
            ledger_tables = [r[0] for r in cur.fetchall()]
            installed = (
                table
                and all(columns.values())
                and len(triggers) == 2
                and index is True
                and {"runs", "batches", "claim_lock", "row_errors"} <= set(ledger_tables)
            )
            report: dict[str, Any] = {
                "table": n.qualified_table,
                "table_exists": table,
                "installed": installed,
                "columns": columns,
                "triggers": triggers,
                "trigger_current": comment == _signature(settings),
                "trigger_notifies": (comment or "").endswith("; notify"),  # sync.notify
                "pending_index": {None: "missing", True: "valid", False: "invalid"}[index],
                "ledger_schema": src.ledger_schema,
                "ledger_tables": ledger_tables,
            }
            if installed:
                report["counts"] = _counts(cur, settings)
    finally:
        conn.close()
    return report


def _counts(cur: Any, settings: Settings) -> dict[str, int]:
    n = Names(settings)
    cur.execute(
        sql.SQL(
            "SELECT count(*) FILTER (WHERE NOT {s}), count(*) FILTER (WHERE {s}) FROM {t}"
        ).format(s=n.synced, t=n.table)
    )
    pending, synced = cur.fetchone()
    cur.execute(
        sql.SQL(
            "SELECT coalesce(sum(cardinality(keys)), 0), count(*) FROM {} WHERE state NOT IN ({})"
        ).format(n.ledger_table("batches"), ledger.finished_states_sql())
    )
    claimed, open_batches = cur.fetchone()
    row_errors, quarantined = row_error_counts(cur.connection, settings)
    return {
        "pending": pending,
        "synced": synced,
        "claimed": claimed,
        "quarantined": quarantined,
        "row_errors": row_errors,
        "open_batches": open_batches,
    }
