"""Read-only queries behind ``ordersync status`` and ``ordersync errors``.

Everything here reads the legacy table and the ledger (``runs``, ``batches``, ``row_errors``,
``credit_ledger``) and writes nothing. The dictionaries returned are the ``--json`` documents of
the CLI; their keys are a public, stable interface (documented in the README, "Monitoring from
scripts"): add keys, never rename or remove one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg2 import sql
from psycopg2.extensions import connection as Connection

from pipeline import ledger
from pipeline.claims import initial_run_plan  # noqa: F401 (the dry run's, re-exported)
from pipeline.ledger import BatchState
from pipeline.legacy.names import PENDING_SINCE_COLUMN, Names, key_type
from pipeline.planner import plan
from pipeline.settings import Settings
from pipeline.zoho import codes
from pipeline.zoho.credits import WINDOW_SECONDS

DEFAULT_RUNS = 5
DEFAULT_ERROR_LIMIT = 100


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _int_or_none(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _finished() -> sql.Composable:
    return sql.SQL(", ").join(sql.Literal(s) for s in ledger.FINISHED_STATES)


def batch_states(conn: Connection, settings: Settings, run_id: int | None = None) -> dict[str, int]:
    """Batches by state (every state present, zero when none), of one run or of all runs."""
    n = Names(settings)
    where = sql.SQL("WHERE run_id = %s") if run_id is not None else sql.SQL("")
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT state, count(*) FROM {} {} GROUP BY state").format(
                n.ledger_table("batches"), where
            ),
            (run_id,) if run_id is not None else None,
        )
        found = dict(cur.fetchall())
    return {state.value: int(found.get(state.value, 0)) for state in BatchState}


def recent_runs(
    conn: Connection, settings: Settings, limit: int = DEFAULT_RUNS
) -> list[dict[str, Any]]:
    """The latest ``limit`` runs, newest first, with their batches by state.

    ``rows_total`` is what the run set out to send (its ``stats``, None if it did not say),
    ``rows_in_batches`` counts rows of every batch of the run, ``rows_reconciled`` those of its
    reconciled batches (sent and answered by Zoho, whatever each row's outcome).
    """
    n = Names(settings)
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                """SELECT r.id, r.kind, r.state, r.started_at, r.updated_at, r.finished_at,
                          r.error, r.stats,
                          coalesce(sum(b.row_count), 0),
                          coalesce(sum(b.row_count) FILTER (WHERE b.state = %s), 0),
                          coalesce(jsonb_object_agg(b.state, b.n)
                                       FILTER (WHERE b.state IS NOT NULL), '{{}}')
                   FROM (SELECT * FROM {runs} ORDER BY id DESC LIMIT %s) r
                   LEFT JOIN (SELECT run_id, state, count(*) AS n, sum(row_count) AS row_count
                              FROM {batches} GROUP BY run_id, state) b ON b.run_id = r.id
                   GROUP BY r.id, r.kind, r.state, r.started_at, r.updated_at, r.finished_at,
                            r.error, r.stats
                   ORDER BY r.id DESC"""
            ).format(runs=n.ledger_table("runs"), batches=n.ledger_table("batches")),
            (BatchState.RECONCILED.value, limit),
        )
        rows = cur.fetchall()
    runs = []
    for (
        rid,
        kind,
        state,
        started,
        updated,
        finished,
        error,
        stats,
        in_batches,
        done,
        by_state,
    ) in rows:
        runs.append(
            {
                "id": int(rid),
                "kind": kind,
                "state": state,
                "started_at": _iso(started),
                "updated_at": _iso(updated),
                "finished_at": _iso(finished),
                "error": error,
                "batches": {s.value: int(by_state.get(s.value, 0)) for s in BatchState},
                "rows_total": _int_or_none((stats or {}).get("rows_total")),
                "rows_in_batches": int(in_batches),
                "rows_reconciled": int(done),
                "stats": stats or {},
            }
        )
    _add_outcomes(conn, settings, runs)
    return runs


def _add_outcomes(conn: Connection, settings: Settings, runs: list[dict[str, Any]]) -> None:
    """Each run's rows written / refused by Zoho / held back by the field rules, and its
    credits spent and predicted (three queries for all the runs)."""
    ids = [r["id"] for r in runs]
    if not ids:
        return
    n = Names(settings)
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT run_id, coalesce(sum(coalesce((stats->>'marked')::bigint,"
                " (stats->>'ok')::bigint)), 0) FROM {} WHERE run_id = ANY(%s) GROUP BY run_id"
            ).format(n.ledger_table("batches")),
            (ids,),
        )
        written = {int(r): int(w) for r, w in cur.fetchall()}
        cur.execute(
            sql.SQL(
                "SELECT b.run_id, count(*) FILTER (WHERE e.code <> %s),"
                " count(*) FILTER (WHERE e.code = %s)"
                " FROM {} e JOIN {} b ON b.id = e.batch_id WHERE b.run_id = ANY(%s)"
                " GROUP BY b.run_id"
            ).format(n.ledger_table("row_errors"), n.ledger_table("batches")),
            (codes.VALIDATION_CODE, codes.VALIDATION_CODE, ids),
        )
        errors = {int(r): (int(z), int(v)) for r, z, v in cur.fetchall()}
        cur.execute(
            sql.SQL(
                "SELECT run_id, coalesce(sum(credits), 0) FROM {} WHERE run_id = ANY(%s)"
                " GROUP BY run_id"
            ).format(n.ledger_table("credit_ledger")),
            (ids,),
        )
        credits = {int(r): int(c) for r, c in cur.fetchall()}
    for run in runs:
        refused, validated_out = errors.get(run["id"], (0, 0))
        forecast = run["stats"].get("forecast") or {}
        run.update(
            rows_written=written.get(run["id"], 0),
            rows_refused=refused,
            rows_validated_out=validated_out,
            credits_spent=credits.get(run["id"], 0),
            credits_predicted=forecast.get("credits"),
            credits_minimum=forecast.get("minimum"),
        )


def run_forecast(conn: Connection, settings: Settings, run_id: int) -> dict[str, Any] | None:
    """The forecast stored when the run started (``pipeline.accounting.Forecast.as_dict``)."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT stats->'forecast' FROM {} WHERE id = %s").format(
                Names(settings).ledger_table("runs")
            ),
            (run_id,),
        )
        row = cur.fetchone()
    return None if row is None else row[0]


def run_error(conn: Connection, settings: Settings, run_id: int) -> str | None:
    """Why a run failed (its ``error``), or None."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT error FROM {} WHERE id = %s").format(
                Names(settings).ledger_table("runs")
            ),
            (run_id,),
        )
        row = cur.fetchone()
    return None if row is None else row[0]


def running_run_ids(conn: Connection, settings: Settings) -> list[int]:
    """Ids of runs in state ``running``, oldest first."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT id FROM {} WHERE state = %s ORDER BY id").format(
                Names(settings).ledger_table("runs")
            ),
            (ledger.RunState.RUNNING.value,),
        )
        return [int(r[0]) for r in cur.fetchall()]


def row_counts(conn: Connection, settings: Settings) -> dict[str, int]:
    """Rows of the legacy table: total, pending, synced, claimed, in_error, quarantined.

    ``claimed`` are rows carried by unfinished batches; ``quarantined`` are rows held back at
    their current version; ``in_error`` every row with a recorded Zoho error.
    """
    n = Names(settings)
    kt = key_type(conn, settings)
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT count(*), count(*) FILTER (WHERE NOT {s}), count(*) FILTER (WHERE {s})"
                " FROM {t}"
            ).format(s=n.synced, t=n.table)
        )
        total, pending, synced = cur.fetchone()  # type: ignore[misc]
        cur.execute(
            sql.SQL(
                "SELECT coalesce(sum(cardinality(keys)), 0) FROM {} WHERE state NOT IN ({})"
            ).format(n.ledger_table("batches"), _finished())
        )
        claimed = cur.fetchone()[0]  # type: ignore[index]
        cur.execute(
            sql.SQL(
                "SELECT count(*), count(*) FILTER (WHERE e.quarantined AND e.version = t.{v}),"
                " count(*) FILTER (WHERE e.quarantined AND e.version = t.{v} AND NOT t.{s})"
                " FROM {e} e LEFT JOIN {t} t ON t.{k} = e.row_key::{kt}"
            ).format(
                v=n.version, s=n.synced, e=n.ledger_table("row_errors"), t=n.table, k=n.key, kt=kt
            )
        )
        in_error, quarantined, quarantined_pending = cur.fetchone()  # type: ignore[misc]
    return {
        "total": int(total),
        "pending": int(pending),
        "synced": int(synced),
        "claimed": int(claimed),
        "in_error": int(in_error),
        "quarantined": int(quarantined),
        # pending rows a new batch may take: not claimed, not held back
        "sendable": max(0, int(pending) - int(claimed) - int(quarantined_pending)),
    }


def oldest_pending(conn: Connection, settings: Settings) -> tuple[float | None, int]:
    """(Seconds since the oldest pending change, pending rows whose change time is unknown).

    The change time is the pending-since column the change triggers set; rows pending since
    before ``db install`` (or an install without that column) have none and are counted apart.
    The age is None when no pending row has a known change time.
    """
    n = Names(settings)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%s)"
            " AND attname = %s AND NOT attisdropped",
            (n.qualified_table, PENDING_SINCE_COLUMN),
        )
        if cur.fetchone() is None:
            cur.execute(sql.SQL("SELECT count(*) FROM {} WHERE NOT {}").format(n.table, n.synced))
            return None, int(cur.fetchone()[0])  # type: ignore[index]
        cur.execute(
            sql.SQL(
                "SELECT extract(epoch FROM now() - min({c})), count(*) FILTER (WHERE {c} IS NULL)"
                " FROM {t} WHERE NOT {s}"
            ).format(c=n.pending_since, t=n.table, s=n.synced)
        )
        age, unknown = cur.fetchone()  # type: ignore[misc]
    return (None if age is None else max(0.0, float(age))), int(unknown)


def credits_spent_24h(conn: Connection, settings: Settings) -> int:
    """Credits reserved or spent in the rolling 24 hours (as ``CreditLedger.spent_24h``)."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s)", (f'"{settings.source.ledger_schema}".credit_ledger',))
        if cur.fetchone()[0] is None:  # type: ignore[index]
            return 0
        cur.execute(
            sql.SQL(
                "SELECT coalesce(sum(credits), 0) FROM {}"
                " WHERE at > now() - make_interval(secs => %s)"
            ).format(Names(settings).ledger_table("credit_ledger")),
            (WINDOW_SECONDS,),
        )
        return int(cur.fetchone()[0])  # type: ignore[index]


def credits(conn: Connection, settings: Settings) -> dict[str, int]:
    """The budget: ``spent_24h``, ``budget``, ``reserve``, ``left`` (budget − reserve − spent)."""
    spent = credits_spent_24h(conn, settings)
    budget, reserve = settings.zoho.daily_credit_budget, settings.zoho.credit_reserve
    return {
        "spent_24h": spent,
        "budget": budget,
        "reserve": reserve,
        "left": max(0, budget - reserve - spent),
    }


def status(conn: Connection, settings: Settings, *, runs: int = DEFAULT_RUNS) -> dict[str, Any]:
    """The whole ``ordersync status --json`` document (the installation must be complete).

    ``plan`` is the planner's answer for the rows a new batch may take within the credits left;
    ``waiting_reason`` says why work waits (empty when nothing does).
    """
    rows = row_counts(conn, settings)
    age, unknown = oldest_pending(conn, settings)
    budget = credits(conn, settings)
    best = plan(rows["sendable"], credits_available=budget["left"])
    with conn.cursor() as cur:
        cur.execute("SELECT now()")
        now = cur.fetchone()[0]  # type: ignore[index]
    return {
        "generated_at": _iso(now),
        "table": Names(settings).qualified_table.replace('"', ""),
        "module": settings.zoho.module,
        "installed": True,
        "runs": recent_runs(conn, settings, runs),
        "running_run_ids": running_run_ids(conn, settings),
        "batches": batch_states(conn, settings),
        "rows": rows,
        "oldest_pending_age_s": age,
        "pending_since_unknown": unknown,
        "credits": budget,
        "plan": best.as_dict(),
        "waiting_reason": best.waiting_reason,
    }


@dataclass(frozen=True)
class ErrorFilter:
    """Which row errors to list: by Zoho ``code``, only those held back, at most ``limit``."""

    code: str | None = None
    quarantined_only: bool = False
    limit: int = DEFAULT_ERROR_LIMIT


def row_errors(conn: Connection, settings: Settings, wanted: ErrorFilter) -> dict[str, Any]:
    """The ``ordersync errors --json`` document: matching errors, held-back rows first.

    ``quarantined`` is true for a row held back now (quarantined and unchanged since);
    ``current_version`` is None when the row no longer exists. ``total`` counts every match,
    ``by_code`` counts every match by code, ``errors`` holds the first ``limit``.
    """
    n = Names(settings)
    held = sql.SQL("(e.quarantined AND e.version IS NOT DISTINCT FROM t.{})").format(n.version)
    conditions: list[sql.Composable] = [sql.SQL("true")]
    params: dict[str, Any] = {"limit": wanted.limit}
    if wanted.code is not None:
        conditions.append(sql.SQL("e.code = %(code)s"))
        params["code"] = wanted.code
    if wanted.quarantined_only:
        conditions.append(held)
    base = sql.SQL("FROM {e} e LEFT JOIN {t} t ON t.{k} = e.row_key::{kt} WHERE {w}").format(
        e=n.ledger_table("row_errors"),
        t=n.table,
        k=n.key,
        kt=key_type(conn, settings),
        w=sql.SQL(" AND ").join(conditions),
    )
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT e.row_key, e.code, e.field, e.message, e.attempts, {held}, e.version,"
                " t.{v}, e.batch_id, e.first_seen, e.last_seen {base}"
                " ORDER BY 6 DESC, e.last_seen DESC, e.row_key LIMIT %(limit)s"
            ).format(held=held, v=n.version, base=base),
            params,
        )
        fetched = cur.fetchall()
        cur.execute(sql.SQL("SELECT e.code, count(*) {} GROUP BY e.code").format(base), params)
        by_code = {code: int(count) for code, count in sorted(cur.fetchall())}
    errors = [
        {
            "row_key": key,
            "code": code,
            "field": field,
            "message": message,
            "attempts": int(attempts),
            "quarantined": bool(quarantined),
            "version": int(version),
            "current_version": None if current is None else int(current),
            "batch_id": None if batch_id is None else int(batch_id),
            "first_seen": _iso(first_seen),
            "last_seen": _iso(last_seen),
        }
        for (
            key,
            code,
            field,
            message,
            attempts,
            quarantined,
            version,
            current,
            batch_id,
            first_seen,
            last_seen,
        ) in fetched
    ]
    return {
        "total": sum(by_code.values()),
        "by_code": by_code,
        "shown": len(errors),
        "errors": errors,
    }
