"""Initial runs: starting one (one at a time, with its credit forecast) and reading its progress."""

from __future__ import annotations

import logging
from typing import Any

import psycopg2
import psycopg2.errors
from psycopg2 import sql
from psycopg2.extensions import connection as Connection

from pipeline import accounting, ledger
from pipeline.initial_sync.batch import (
    table,
)
from pipeline.initial_sync.decisions import (
    RunInProgress,
)
from pipeline.ledger import RunKind, RunState
from pipeline.legacy.connection import connect
from pipeline.legacy.names import Names, key_type
from pipeline.settings import Settings
from pipeline.zoho import codes

log = logging.getLogger(__name__)


def start_initial_run(settings: Settings) -> int:
    """Create the ``runs`` row of an initial sync; its id. Raises :class:`RunInProgress`.

    One initial sync at a time per table and module: a partial unique index on
    ``runs (kind) WHERE state = 'running' AND kind = 'initial'`` makes the insert itself the check.
    """
    org_cached = accounting.org_id_cached(settings)
    conn = connect(settings, application="ordersync-initial")
    try:
        n = Names(settings)
        try:
            with conn, conn.cursor() as cur:
                # rows held back already (refused at this version) are not the run's to send;
                # counted from the ledger's side, by key (the pending count reads the pending
                # rows' index): no pass over the table besides the forecast's
                cur.execute(
                    sql.SQL(
                        "SELECT (SELECT count(*) FROM {t} t WHERE NOT t.{s}),"
                        " (SELECT count(*) FROM {e} e JOIN {t} t ON t.{k} = e.row_key::{kt}"
                        " AND e.version = t.{v} WHERE e.quarantined AND NOT t.{s})"
                    ).format(
                        t=n.table,
                        e=n.ledger_table("row_errors"),
                        k=n.key,
                        kt=key_type(conn, settings),
                        v=n.version,
                        s=n.synced,
                    )
                )
                all_pending, held = (int(v) for v in cur.fetchone())  # type: ignore[union-attr]
                pending = all_pending - held
                ahead = accounting.forecast(conn, settings, org_cached=org_cached)
                stats = {"rows_total": pending, "rows_held": held, "forecast": ahead.as_dict()}
                run_id = ledger.create_run(conn, settings, RunKind.INITIAL, stats)
        except psycopg2.errors.UniqueViolation:
            with conn, conn.cursor() as cur:
                cur.execute(
                    sql.SQL(
                        "SELECT id FROM {} WHERE kind = %s AND state = %s ORDER BY id LIMIT 1"
                    ).format(table(settings, "runs")),
                    (RunKind.INITIAL.value, RunState.RUNNING.value),
                )
                row = cur.fetchone()
            if row is None:  # it finished meanwhile: try once more
                return start_initial_run(settings)
            running = int(row[0])
            raise RunInProgress(running, _progress(conn, settings, running)) from None
    finally:
        conn.close()
    log.info("initial sync run %s started: %s rows pending; forecast %s credits (minimum %s)",
             run_id, pending, ahead.credits, ahead.minimum)  # fmt: skip
    return run_id


def run_progress(
    settings: Settings, run_id: int, conn: Connection | None = None
) -> dict[str, Any]:
    """Live progress of a run from the ledger (three queries; cheap enough to poll each second).

    Keys: ``run_id, state, rows_total, rows_done, rows_synced, rows_skipped, rows_held,
    rows_validated_out, batches`` (count by
    state), ``credits_spent`` (credits charged to the run), ``started_at`` (ISO), ``elapsed_s``,
    ``rate_rows_s``, ``eta_s`` (None until a rate is known). ``rows_synced``: rows marked synced
    by the run's batches (bulk and upsert); ``rows_skipped``: rows whose latest Zoho error came
    from this run; ``rows_held``: of them, held back (a permanent code, or retries used up);
    ``rows_validated_out``: rows our field rules held back in this run, never sent;
    ``rows_done``: synced plus held plus validated out, capped at ``rows_total`` (the pending
    rows not already held back when the run started).
    """
    if conn is not None:  # a poller's own connection (each new one costs the server ~10 ms)
        return _progress(conn, settings, run_id)
    own = connect(settings, application="ordersync-progress")
    try:
        return _progress(own, settings, run_id)
    finally:
        own.close()


def _progress(conn: Connection, settings: Settings, run_id: int) -> dict[str, Any]:
    with conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT state, started_at, coalesce(finished_at, now()), now(),"
                " coalesce((stats->>'rows_total')::bigint, 0), stats->'forecast'"
                " FROM {} WHERE id = %s"
            ).format(table(settings, "runs")),
            (run_id,),
        )
        row = cur.fetchone()
        if row is None:
            raise LookupError(f"no run {run_id}")
        state, started_at, until, _now, total, predicted = row
        cur.execute(
            sql.SQL(
                "SELECT state, count(*),"
                " coalesce(sum(coalesce((stats->>'marked')::bigint, (stats->>'ok')::bigint)), 0)"
                " FROM {} WHERE run_id = %s GROUP BY state"
            ).format(table(settings, "batches")),
            (run_id,),
        )
        batches: dict[str, int] = {}
        synced = 0
        for b_state, count, ok in cur.fetchall():
            batches[b_state] = int(count)
            synced += int(ok)
        # rows whose latest error came from this run: refused by Zoho (held back if
        # quarantined), or held back by our field rules before sending (validated out)
        cur.execute(
            sql.SQL(
                "SELECT count(*) FILTER (WHERE e.code <> %(v)s),"
                " count(*) FILTER (WHERE e.code <> %(v)s AND e.quarantined),"
                " count(*) FILTER (WHERE e.code = %(v)s AND e.quarantined)"
                " FROM {} e LEFT JOIN {} b ON b.id = e.batch_id"
                " WHERE b.run_id = %(run)s"
                " OR (e.batch_id IS NULL AND e.code = %(v)s AND e.last_seen >= %(started)s)"
            ).format(table(settings, "row_errors"), table(settings, "batches")),
            {"v": codes.VALIDATION_CODE, "run": run_id, "started": started_at},
        )
        skipped, quarantined, validated_out = (int(v) for v in cur.fetchone())  # type: ignore[union-attr]
        cur.execute(
            sql.SQL("SELECT coalesce(sum(credits), 0) FROM {} WHERE run_id = %s").format(
                table(settings, "credit_ledger")
            ),
            (run_id,),
        )
        credits = int(cur.fetchone()[0])  # type: ignore[index]
    elapsed = max(0.0, (until - started_at).total_seconds())
    finished = synced + quarantined + validated_out
    done = min(int(total), finished) if total else finished
    rate = done / elapsed if elapsed > 0 and done else 0.0
    eta = (max(0, int(total) - done) / rate) if rate > 0 else None
    return {
        "run_id": run_id,
        "state": state,
        "rows_total": int(total),
        "rows_done": done,
        "rows_synced": synced,
        "rows_skipped": skipped,
        "rows_held": quarantined,
        "rows_validated_out": validated_out,
        "batches": batches,
        "credits_spent": credits,
        "credits_predicted": None if predicted is None else predicted["credits"],
        "credits_minimum": None if predicted is None else predicted["minimum"],
        "started_at": started_at.isoformat(),
        "elapsed_s": round(elapsed, 3),
        "rate_rows_s": round(rate, 1),
        "eta_s": None if eta is None else round(eta, 1),
    }
