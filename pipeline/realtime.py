"""Near-real-time mode: changed rows go to Zoho by Upsert calls (≤ 100), at most ``max_delay`` late.

The buffer is the legacy table itself: the pending (``synced = false``) rows. Nothing lives only
in memory, so a crash loses nothing, and a row edited five times before a flush is one pending
row, sent once (coalescing for free).

A check (every ``realtime_check`` seconds, a beat task) asks :func:`due`: flush a full batch
when at least ``realtime_threshold`` rows are *ready*; flush everything ready when the oldest
ready change would have waited longer than ``realtime_max_delay`` by the next check (so it goes
at the last check before its deadline); otherwise flush the ready rows in whole tens (at least
``realtime_min_batch``, oldest change first): Upsert costs 1 credit per 10 records, so ten now
cost what ten cost in a batch of 100 later, and only the last few (< 10) wait. A ready row is
pending, not claimed by an unfinished batch (bulk range or realtime keys), not quarantined at
its version, and not *resting*: a row Zoho refused rests
for ``max_delay`` after the refusal before it can force a flush again (it still rides along in
batches sent anyway). The change time is ``sync_pending_since``, set by the change trigger when
the row went from synced to pending (rows pending since before ``db install`` count as
overdue: their change time is unknown).

:func:`flush` then sends batch after batch (:func:`send_batch`: claim ≤ 100 rows, JSON from the
one serialiser, ``upsert``, reconcile per record) while :func:`due` says so. With 255 changes
that is 100, 100, 50 at once, and the last 5 once they are ``max_delay`` old (or when five
more make ten). Each batch is reconciled in one transaction: accepted rows are marked
synced only at the version claimed (a row changed during the flush stays pending and goes in
the next one), refused rows get a row error (code, field, message; quarantined after
``max_attempts``), and the batch ends ``reconciled``, releasing its claims.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from psycopg2 import sql
from psycopg2.extensions import connection as Connection

from pipeline import ledger, planner
from pipeline.ledger import BatchKind, BatchState, RunKind, RunState
from pipeline.legacy.connection import connect
from pipeline.legacy.names import Names, key_type
from pipeline.settings import Settings, SyncMode
from pipeline.upserts import BatchResult, release_abandoned, send_batch
from pipeline.zoho.client import ZohoClient
from pipeline.zoho.errors import CreditBudgetExceeded
from pipeline.zoho.limits import UPSERT_MAX_RECORDS, UPSERT_RECORDS_PER_CREDIT, upsert_credits

log = logging.getLogger(__name__)

# Batches one flush sends at most; a bigger backlog continues in the next flush.
MAX_BATCHES_PER_FLUSH = 200
# The key of ``runs.stats`` that says why work is waiting (read by ``ordersync status``).
WAITING_KEY = "waiting"

_UNFINISHED = tuple(s for s in BatchState if not s.finished)


class Reason(StrEnum):
    """Why a check flushes, or does not."""

    THRESHOLD = "threshold"  # enough rows for a full batch
    TENS = "tens"  # ready rows in whole tens: sent now, for what waiting would cost too
    MAX_DELAY = "max_delay"  # the oldest change has waited long enough
    NOT_YET = "not_yet"  # some rows pending, neither rule met
    NOTHING = "nothing"  # no ready row
    BACKLOG = "backlog"  # cheaper by a bulk job: left to the interval run (mode ``both``)
    INITIAL_RUN = "initial_run"  # an initial sync is running: its own rounds send these rows
    WOKEN = "woken"  # woken by the change trigger's NOTIFY (sync.notify): send what is ready


@dataclass(frozen=True)
class PendingState:
    """What the buffer holds now: ready rows, the age of the oldest ready change (seconds)."""

    ready: int
    oldest_age: float | None
    free: int  # pending and unclaimed, resting rows included (what an interval run sees)
    initial_running: bool = False  # an initial sync is in progress: the ongoing sync stands by


@dataclass(frozen=True)
class Due:
    """The check's decision (:func:`decide`): flush or not, and why."""

    flush: bool
    reason: Reason
    ready: int
    oldest_age: float | None
    limit: int = UPSERT_MAX_RECORDS  # rows the next batch takes (oldest change first)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "flush": self.flush,
            "reason": self.reason.value,
            "ready": self.ready,
            "limit": self.limit,
            "oldest_age": None if self.oldest_age is None else round(self.oldest_age, 3),
        }


def decide(state: PendingState, settings: Settings, *, woken: bool = False) -> Due:
    """Flush when ``realtime_threshold`` rows are ready or the oldest change would be more than
    ``max_delay`` old at the next check (``age + realtime_check >= max_delay``), so every change
    reaches Zoho within ``max_delay`` while checks run on time.

    A check ``woken`` by a change notification (``sync.notify``, :mod:`pipeline.notify`) sends
    every ready row at once (:data:`Reason.WOKEN`): latency over credits, which is what turning
    notify on asks for (a call of 1 record costs what a call of 10 does).

    Pure. In mode ``both`` a backlog that a bulk job sends for fewer credits (the planner
    says so: ~5,000 rows and more) is left to the interval run (:data:`Reason.BACKLOG`).
    """
    ready, age = state.ready, state.oldest_age
    if state.initial_running:
        return Due(False, Reason.INITIAL_RUN, ready, age)
    if ready == 0:
        return Due(False, Reason.NOTHING, 0, None)
    if settings.mode is SyncMode.BOTH and planner.plan(ready).bulk_jobs > 0:
        return Due(False, Reason.BACKLOG, ready, age)
    if ready >= settings.realtime_threshold:
        return Due(True, Reason.THRESHOLD, ready, age)
    if woken:
        return Due(True, Reason.WOKEN, ready, age)
    # The last check before the deadline sends: the next one would come after it.
    if age is not None and age + settings.realtime_check >= settings.realtime_max_delay:
        return Due(True, Reason.MAX_DELAY, ready, age)
    # Upsert costs 1 credit per 10 records: whole tens cost the same now as in a full batch
    # later, so they go now; only the last few (< 10) wait, for company or for the deadline.
    if ready >= settings.realtime_min_batch:
        size = min(ready, UPSERT_MAX_RECORDS)
        if settings.realtime_min_batch >= UPSERT_RECORDS_PER_CREDIT:
            size -= size % UPSERT_RECORDS_PER_CREDIT
        return Due(True, Reason.TENS, ready, age, limit=size)
    return Due(False, Reason.NOT_YET, ready, age)


def _unfinished_sql() -> sql.Composable:
    return sql.SQL(", ").join(sql.Literal(s.value) for s in _UNFINISHED)


def pending_state(
    conn: Connection, settings: Settings, now: datetime | None = None
) -> PendingState:
    """Count the ready rows and age the oldest ready change (database clock unless ``now``).

    Same claim rules as extraction (``pipeline.legacy.extract``); see the module docstring for
    *ready*. Runs and commits its own short read.
    """
    n = Names(settings)
    statement = sql.SQL(
        """WITH open AS (SELECT kind, key_lo, key_hi, keys FROM {batches}
                         WHERE state IN ({unfinished})),
                free AS (
                    SELECT t.{since} AS since,
                           e.version IS NOT DISTINCT FROM t.{version}
                               AND e.last_seen > %(now)s - make_interval(secs => %(rest)s)
                               AS resting
                    FROM {table} t
                    LEFT JOIN {errors} e ON e.row_key = t.{key}::text
                    WHERE NOT t.{synced}
                      AND NOT (coalesce(e.quarantined, false) AND e.version = t.{version})
                      AND NOT EXISTS (
                          SELECT 1 FROM open b
                          WHERE (b.kind = {bulk} AND b.key_lo IS NOT NULL
                                 AND t.{key} BETWEEN b.key_lo::{kt} AND b.key_hi::{kt})
                             OR (b.kind = {rt} AND t.{key}::text = ANY (b.keys))))
           SELECT count(*) FILTER (WHERE NOT resting),
                  extract(epoch FROM %(now)s - min(coalesce(since, 'epoch'))
                                               FILTER (WHERE NOT resting)),
                  count(*),
                  EXISTS (SELECT 1 FROM {runs} WHERE kind = {initial} AND state = {running})
           FROM free"""
    ).format(
        batches=n.ledger_table("batches"),
        unfinished=_unfinished_sql(),
        since=n.pending_since,
        version=n.version,
        table=n.table,
        errors=n.ledger_table("row_errors"),
        key=n.key,
        synced=n.synced,
        bulk=sql.Literal(BatchKind.BULK.value),
        rt=sql.Literal(BatchKind.REALTIME.value),
        kt=key_type(conn, settings),
        runs=n.ledger_table("runs"),
        initial=sql.Literal(RunKind.INITIAL.value),
        running=sql.Literal(RunState.RUNNING.value),
    )
    with conn, conn.cursor() as cur:
        if now is None:
            cur.execute("SELECT now()")
            now = cur.fetchone()[0]  # type: ignore[index]
        cur.execute(statement, {"now": now, "rest": settings.realtime_max_delay})
        ready, age, free, initial_running = cur.fetchone()  # type: ignore[misc]
    return PendingState(
        int(ready), None if age is None else float(age), int(free), bool(initial_running)
    )


def due(
    conn: Connection, settings: Settings, now: datetime | None = None, *, woken: bool = False
) -> Due:
    """Whether a near-real-time flush is due now (:func:`pending_state` then :func:`decide`)."""
    return decide(pending_state(conn, settings, now), settings, woken=woken)


@dataclass(frozen=True)
class FlushResult:
    """What a flush did: its run (None if nothing was sent), the batches, the last decision."""

    run_id: int | None
    batches: tuple[BatchResult, ...]
    decision: Due
    more: bool = False  # stopped at MAX_BATCHES_PER_FLUSH with a flush still due
    waiting_reason: str = ""
    released: tuple[int, ...] = field(default_factory=tuple)

    @property
    def sent(self) -> int:
        return sum(b.sent for b in self.batches)

    @property
    def credits(self) -> int:
        return sum(b.credits for b in self.batches)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (what the Celery task returns)."""
        return {
            "run_id": self.run_id,
            "batches": len(self.batches),
            "sizes": [b.sent for b in self.batches],
            "sent": self.sent,
            "ok": sum(b.ok for b in self.batches),
            "refused": sum(b.refused for b in self.batches),
            "stale": sum(b.stale for b in self.batches),
            "credits": self.credits,
            "decision": self.decision.as_dict(),
            "more": self.more,
            "waiting_reason": self.waiting_reason,
            "released": list(self.released),
        }


def set_run_stats(conn: Connection, settings: Settings, run_id: int, stats: dict[str, Any]) -> None:
    """Merge ``stats`` into the run's ``stats`` (in the caller's transaction)."""
    ledger.merge_run_stats(conn, settings, run_id, stats)


def waiting_stats(rows: int, reason: str, retry_after: float | None = None) -> dict[str, Any]:
    """The ``runs.stats[WAITING_KEY]`` value: rows that wait, why, and when to try again."""
    return {"rows": rows, "reason": reason, "retry_after": retry_after}


def flush(
    settings: Settings,
    client: ZohoClient,
    *,
    conn: Connection | None = None,
    max_batches: int = MAX_BATCHES_PER_FLUSH,
    now: datetime | None = None,
    woken: bool = False,
) -> FlushResult:
    """Send what is due, batch after batch, until :func:`due` says stop (see module docstring).

    Records a ``realtime`` run only when something is sent (a check every 30 s that finds
    nothing leaves no trace). When the credit budget refuses a call, the flush stops and the
    run's ``stats["waiting"]`` says why; the rows stay pending. Any other error ends the run
    ``failed`` and is raised (transient ones are retried by the task). ``woken``: a check sent
    by the change listener (:func:`decide`); only its first decision sends every ready row,
    later batches of the same flush follow the usual rules (a burst of commits during the
    flush waits for the next wake, not one call each).
    """
    own = conn is None
    conn = connect(settings, application="ordersync-realtime") if conn is None else conn
    try:
        released = tuple(release_abandoned(conn, settings))
        run_id: int | None = None
        batches: list[BatchResult] = []
        waiting = ""
        created = False  # a run was started by this flush (finish it)
        decision = due(conn, settings, now, woken=woken)
        try:
            while decision.flush and len(batches) < max_batches:
                needed = upsert_credits(min(decision.ready, decision.limit))
                left = client.credits.remaining()
                if left < needed:  # checked first: no claim, no failed batch per check
                    waiting = (
                        f"credit budget: {left} credits left in the 24 h window, the next batch"
                        f" needs {needed}; {decision.ready} rows wait"
                    )
                    run_id = _note_waiting(
                        conn, settings, run_id, waiting_stats(decision.ready, waiting)
                    )
                    break
                if run_id is None:
                    with conn:
                        run_id = ledger.create_run(conn, settings, RunKind.REALTIME)
                    created = True
                try:
                    result = send_batch(
                        conn, settings, client, limit=decision.limit, run_id=run_id
                    )
                except CreditBudgetExceeded as exc:
                    waiting = f"credit budget: {exc.message}"
                    with conn:
                        set_run_stats(
                            conn, settings, run_id,
                            {WAITING_KEY: waiting_stats(decision.ready, waiting, exc.retry_after)},
                        )  # fmt: skip
                    break
                if result is None:
                    break
                batches.append(result)
                # a wake sends what was ready when it came; rows changed since wait for the next
                decision = due(conn, settings, now)
        except Exception as exc:
            if run_id is not None and created:
                with conn:
                    set_run_stats(conn, settings, run_id, _run_stats(batches))
                    ledger.finish_run(conn, settings, run_id, RunState.FAILED, str(exc))
            raise
        flushed = FlushResult(
            run_id,
            tuple(batches),
            decision,
            more=decision.flush and len(batches) >= max_batches and not waiting,
            waiting_reason=waiting,
            released=released,
        )
        if run_id is not None and created:
            with conn:
                set_run_stats(conn, settings, run_id, _run_stats(batches))
                ledger.finish_run(conn, settings, run_id, RunState.DONE)
            log.info(
                "realtime run %s: %d batches, %d rows, %d credits (%s)",
                run_id, len(batches), flushed.sent, flushed.credits, decision.reason,
            )  # fmt: skip
        return flushed
    finally:
        if own:
            conn.close()


def _note_waiting(
    conn: Connection, settings: Settings, run_id: int | None, stats: dict[str, Any]
) -> int:
    """Record why a flush waits, on its run; a flush that sent nothing reuses the newest run
    if that is a realtime run already waiting (not one new run per check while the budget is
    spent). Returns the run id."""
    if run_id is None:
        latest = waiting(conn, settings)
        if latest is not None and latest["kind"] == RunKind.REALTIME.value:
            run_id = int(latest["run_id"])
    with conn:
        if run_id is None:
            run_id = ledger.create_run(conn, settings, RunKind.REALTIME)
            ledger.finish_run(conn, settings, run_id, RunState.DONE)
        set_run_stats(conn, settings, run_id, {WAITING_KEY: stats})
    return run_id


def _run_stats(batches: Sequence[BatchResult]) -> dict[str, Any]:
    return {
        "batches": len(batches),
        "sizes": [b.sent for b in batches],
        "sent": sum(b.sent for b in batches),
        "ok": sum(b.ok for b in batches),
        "refused": sum(b.refused for b in batches),
        "stale": sum(b.stale for b in batches),
        "credits": sum(b.credits for b in batches),
    }


def waiting(conn: Connection, settings: Settings) -> dict[str, Any] | None:
    """Why sync work waits now, for ``ordersync status``: the newest run's ``stats["waiting"]``.

    Looks at the latest ``interval`` or ``realtime`` run that recorded anything; None when that
    run did not have to wait.
    """
    with conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT id, kind, stats -> %s, updated_at FROM {} WHERE kind IN (%s, %s)"
                " ORDER BY id DESC LIMIT 1"
            ).format(Names(settings).ledger_table("runs")),
            (WAITING_KEY, RunKind.INTERVAL.value, RunKind.REALTIME.value),
        )
        row = cur.fetchone()
    if row is None or row[2] is None:
        return None
    return {"run_id": int(row[0]), "kind": row[1], **row[2], "at": row[3].isoformat()}
