"""The sweeper's view: batches and runs that stopped moving."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from psycopg2 import sql
from psycopg2.extensions import connection as Connection

from pipeline import ledger
from pipeline.initial_sync.batch import (
    table,
)
from pipeline.initial_sync.decisions import (
    NEXT_STEP,
    Outcome,
    Step,
)
from pipeline.ledger import BatchKind, BatchState, RunKind, RunState
from pipeline.legacy.connection import transaction
from pipeline.settings import Settings, SyncMode

log = logging.getLogger(__name__)

_RUN_KINDS_SWEPT = (RunKind.INITIAL.value, RunKind.MANUAL.value, RunKind.INTERVAL.value)
# A run's claim chain holds no lock between claims, and polls of long jobs may leave every
# batch of a run unmoved for up to a minute: a run is stalled only after this long at least.
RUN_STALL_MIN = 60.0


def sweep_thresholds(settings: Settings, older_than: float | None) -> tuple[float, float]:
    """Seconds before a batch, and before a run's claim chain, count as stalled: ``older_than``
    for both when given (tests, by hand); else ``stall_after``, and at least ``RUN_STALL_MIN``
    for runs (no lock covers a run's chain of claims)."""
    if older_than is not None:
        return float(older_than), float(older_than)
    return settings.stall_after, max(settings.stall_after, RUN_STALL_MIN)


def expect_next(conn: Connection, settings: Settings, outcome: Outcome) -> None:
    """Record when the outcome's next step of a batch is due (its countdown), so the sweeper
    does not mistake a batch waiting on purpose for one whose worker died."""
    if outcome.batch_id is None or outcome.next_step is None or outcome.countdown <= 0:
        return
    with conn:
        ledger.expect_step(conn, settings, outcome.batch_id, outcome.countdown)


def stalled_batches(settings: Settings, older_than: float) -> list[tuple[int, Step]]:
    """Unfinished bulk batches stuck for ``older_than`` seconds (``ledger.stuck_sql``: not
    moved, not due, no live worker on them), with the step to re-run for each (by its state),
    oldest first.
    """
    with transaction(settings, "ordersync-sweeper") as cur:
        cur.execute(
            sql.SQL("SELECT id, state FROM {} WHERE kind = %s AND {} ORDER BY updated_at").format(
                table(settings, "batches"), ledger.stuck_sql(older_than)
            ),
            (BatchKind.BULK.value,),
        )
        rows = cur.fetchall()
    return [(int(batch_id), NEXT_STEP[BatchState(state)]) for batch_id, state in rows]


def stalled_runs(settings: Settings, older_than: float) -> list[int]:
    """Running bulk runs with room in their window and no claim for ``older_than`` seconds:
    their chain of claims was lost (a worker died in extract, a message was lost). The
    sweeper passes at least ``RUN_STALL_MIN``.
    """
    with transaction(settings, "ordersync-sweeper") as cur:
        cur.execute(
            sql.SQL(
                """SELECT r.id FROM {runs} r
                   WHERE r.state = %s AND r.kind = ANY(%s)
                     AND r.updated_at < now() - make_interval(secs => %s)
                     AND (SELECT count(*) FROM {batches} b WHERE b.run_id = r.id
                          AND b.state NOT IN ({finished})) < %s
                     AND NOT EXISTS (SELECT 1 FROM {batches} b WHERE b.run_id = r.id
                          AND b.updated_at >= now() - make_interval(secs => %s))
                   ORDER BY r.id"""
            ).format(
                runs=table(settings, "runs"),
                batches=table(settings, "batches"),
                finished=ledger.finished_states_sql(),
            ),
            (
                RunState.RUNNING.value,
                list(_RUN_KINDS_SWEPT),
                float(older_than),
                settings.batches_in_flight,
                float(older_than),
            ),
        )
        return [int(r[0]) for r in cur.fetchall()]


@dataclass(frozen=True)
class Resume:
    """What the sweep hands on once it freed abandoned upsert batches: the next claim of each
    bulk run they belonged to, and a near-real-time check for the freed rows."""

    runs: tuple[int, ...] = ()
    realtime_check: bool = False


def runs_of_batches(
    conn: Connection, settings: Settings, batch_ids: list[int]
) -> list[tuple[int, RunKind]]:
    """The running runs the given batches belong to (each once, by id), with their kind."""
    if not batch_ids:
        return []
    with conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                """SELECT DISTINCT r.id, r.kind FROM {runs} r JOIN {batches} b ON b.run_id = r.id
                   WHERE b.id = ANY(%s) AND r.state = %s ORDER BY r.id"""
            ).format(runs=table(settings, "runs"), batches=table(settings, "batches")),
            (list(batch_ids), RunState.RUNNING.value),
        )
        return [(int(run_id), RunKind(kind)) for run_id, kind in cur.fetchall()]


def resume_released(conn: Connection, settings: Settings, released: list[int]) -> Resume:
    """After :func:`pipeline.upserts.release_abandoned` freed ``released``: what goes on at once
    rather than at the next check or claim sweep (a killed worker's rows moving again within
    ``stall_after`` + one sweep).

    A bulk run (initial, manual, interval) gets its next claim (its pricing sends the freed
    rows by upsert again; a realtime run was ended by the release); in a near-real-time mode
    a check is asked for.
    """
    if not released:
        return Resume()
    runs = [run_id for run_id, kind in runs_of_batches(conn, settings, released)
            if kind is not RunKind.REALTIME]  # fmt: skip
    check = settings.mode in (SyncMode.REALTIME, SyncMode.BOTH)
    if runs or check:
        log.warning("released batches %s: resuming runs %s%s", released, runs,
                    ", near-real-time check" if check else "")  # fmt: skip
    return Resume(tuple(runs), check)
