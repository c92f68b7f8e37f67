"""The run's claims: price the next claim, then a bulk batch (extract) or Upsert calls (upsert)."""

from __future__ import annotations

import logging
import time
from typing import Any

from psycopg2 import sql
from psycopg2.extensions import connection as Connection

from pipeline import ledger, upserts
from pipeline.claims import ClaimChoice, bulk_is_cheaper, choose_claim
from pipeline.initial_sync.batch import (
    fail_run_if_hopeless,
    table,
)
from pipeline.initial_sync.decisions import (
    FREE_COUNT_CAP,
    MAX_UPSERT_CALLS,
    PREPARED_AHEAD,
    Outcome,
    Step,
    run_is_done,
    step_retry_countdown,
    window_has_room,
)
from pipeline.ledger import BatchKind, BatchState, RunKind, RunState
from pipeline.legacy.extract import (
    Claim,
    claim,
    claiming,
    count_sendable,
    free_rows,
    require_idle,
)
from pipeline.legacy.names import key_type
from pipeline.settings import Settings
from pipeline.zoho.client import ZohoClient
from pipeline.zoho.errors import FatalZohoError
from pipeline.zoho.limits import BULK_JOB_MAX_ROWS

log = logging.getLogger(__name__)


def price_claim(cur: Any, settings: Settings, kt: sql.Composable) -> ClaimChoice | None:
    """:func:`choose_claim` on the sendable rows now, in the caller's claiming transaction.

    Counts (up to ``FREE_COUNT_CAP``) the sendable rows ahead of the highest open bulk batch
    (the rows the claim would really take) and, unless a full batch is ahead (then the total
    cannot change the choice), all the sendable rows.
    """
    free = free_rows(cur, settings, kt)
    after = None if free.highest is None else str(free.highest)
    ahead = None
    if free.highest is not None:
        ahead = count_sendable(cur, settings, kt, free, after=free.highest, cap=FREE_COUNT_CAP)
        if ahead >= min(settings.batch_size, BULK_JOB_MAX_ROWS):
            return choose_claim(ahead, settings.batch_size, ahead=ahead, after=after)
    total = count_sendable(cur, settings, kt, free, cap=FREE_COUNT_CAP)
    return choose_claim(total, settings.batch_size, ahead=ahead if total else None, after=after)


def claim_priced(
    cur: Any, settings: Settings, kt: sql.Composable, run_id: int
) -> tuple[Claim | None, ClaimChoice | None]:
    """The run's next claim as :func:`price_claim` then :func:`claim` would make it, without
    counting first: ``(claim, None)``, or ``(None, choice)`` when upserts are cheaper, or
    ``(None, None)`` when nothing is sendable.

    The claim takes up to a batch (ahead of the open batches first, then from the first free
    key) and is undone (a savepoint) when it is too small for a bulk job to pay: then it held
    every sendable row, and the choice is priced on that count. Rows passed over because they
    break a field rule are held back whenever nothing is claimed, as :func:`claim` does.
    """
    cap = min(settings.batch_size, BULK_JOB_MAX_ROWS)
    if not bulk_is_cheaper(cap):  # batches too small to ever go by bulk: price, never claim
        choice = price_claim(cur, settings, kt)
        if choice is None:
            claim(cur, settings, kt, kind=BatchKind.BULK, limit=cap, run_id=run_id)  # holds
        return None, choice
    highest = free_rows(cur, settings, kt).highest
    taken = 0
    for after in ([highest, None] if highest is not None else [None]):
        cur.execute("SAVEPOINT priced_claim")
        claimed, _ = claim(cur, settings, kt, kind=BatchKind.BULK, limit=cap, run_id=run_id,
                           after=after)  # fmt: skip
        if claimed is None or bulk_is_cheaper(claimed.row_count):
            cur.execute("RELEASE SAVEPOINT priced_claim")
            if claimed is not None:
                return claimed, None
            continue
        cur.execute("ROLLBACK TO SAVEPOINT priced_claim")
        taken = claimed.row_count  # from the first free key: every sendable row (< a batch)
    return None, choose_claim(taken, settings.batch_size)


def extract(conn: Connection, settings: Settings, run_id: int) -> Outcome:
    """Claim the run's next batch (≤ ``batch_size`` free pending rows, key order) → ``extracted``.

    Inside the claim lock: does nothing if the run is not running or its in-flight window is
    full; finishes the run (``done``) when nothing is left to claim and none of its batches is
    unfinished. When the planner finds upserts cheaper for what is free (:func:`choose_claim`),
    claims nothing and names the ``upsert`` step for the run instead (not for an interval run:
    ``pipeline.interval`` has priced its rows and calls this step for the bulk part only).
    """
    with claiming(conn, settings) as kt, conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT state, kind FROM {} WHERE id = %s").format(table(settings, "runs")),
            (run_id,),
        )
        row = cur.fetchone()
        if row is None or row[0] != RunState.RUNNING.value:
            return Outcome(None, None, run_id=run_id, note="run is not running")
        # an interval run priced its rows itself (pipeline.interval): it claims bulk only
        priced = row[1] != RunKind.INTERVAL.value
        # the window counts batches up to their job's end (one whose job is done is only
        # reconciled: the poll that saw the end asks for the next claim), and holds one batch
        # more than the jobs in flight, uploaded and waiting for a job slot (create_job)
        cur.execute(
            sql.SQL(
                "SELECT count(*), count(*) FILTER (WHERE state <> %s) FROM {}"
                " WHERE run_id = %s AND state NOT IN ({})"
            ).format(table(settings, "batches"), ledger.finished_states_sql()),
            (BatchState.JOB_DONE.value, run_id),
        )
        open_batches, in_window = cur.fetchone()  # type: ignore[misc]
        window = settings.batches_in_flight + PREPARED_AHEAD  # jobs, and one batch ready
        if not window_has_room(in_window, window):
            return Outcome(None, None, run_id=run_id, note="in-flight window is full")
        if priced:
            claimed, choice = claim_priced(cur, settings, kt, run_id)
            if choice is not None and choice.kind is BatchKind.REALTIME:
                return Outcome(None, Step.UPSERT, run_id=run_id,
                               note=f"upserts: {choice.plan.describe()}")  # fmt: skip
        else:  # an interval run: bulk only; rows that break a rule are held
            claimed, _ = claim(cur, settings, kt, kind=BatchKind.BULK,
                               limit=settings.batch_size, run_id=run_id)  # fmt: skip
        ledger.touch_run(conn, settings, run_id)
        if claimed is None:
            if run_is_done(open_batches, claimed=False):
                ledger.finish_run(conn, settings, run_id, RunState.DONE)
                log.info("run %s done: nothing left to claim", run_id)
                return Outcome(None, None, run_id=run_id, note="run done")
            return Outcome(None, None, run_id=run_id, note="nothing free to claim")
    log.info(
        "batch %s claimed: %s rows, keys %s..%s",
        claimed.batch_id, claimed.row_count, claimed.key_lo, claimed.key_hi,
    )  # fmt: skip
    more = window_has_room(in_window + 1, window)
    return Outcome(claimed.batch_id, Step.RENDER, run_id=run_id, more=more)


def upsert(conn: Connection, settings: Settings, client: ZohoClient, run_id: int) -> Outcome:
    """Send the run's free rows by Upsert calls of 100, then hand on to the run's next claim.

    Each call is one ``realtime`` batch of the run (``pipeline.upserts.send_batch``: claim,
    upsert, version-checked marking, row errors, claims released), so ``run_progress`` and the
    credit ledger count it. One step sends at most as many rows as were free when it began
    (a row Zoho refused is free again at once and may ride along in the step's next call;
    every attempt counts towards its quarantine), then hands back to EXTRACT, which prices
    what is left again; it hands back at once if the planner finds a bulk job cheaper. A
    call that fails fatally fails its batch (its rows stay pending); the run fails after
    ``MAX_FAILED_BATCHES``.
    """
    started = time.monotonic()
    require_idle(conn)
    with conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT state FROM {} WHERE id = %s").format(table(settings, "runs")), (run_id,)
        )
        row = cur.fetchone()
        if row is None or row[0] != RunState.RUNNING.value:
            return Outcome(None, None, run_id=run_id, note="run is not running")
        choice = price_claim(cur, settings, key_type(conn, settings))
    if choice is None or choice.kind is BatchKind.BULK:
        return Outcome(None, Step.EXTRACT, run_id=run_id, note="a bulk claim, or nothing")
    results: list[upserts.BatchResult] = []
    try:
        while sum(r.sent for r in results) < choice.rows and len(results) < MAX_UPSERT_CALLS:
            result = upserts.send_batch(conn, settings, client, run_id=run_id)
            if result is None:
                break
            results.append(result)
    except FatalZohoError as exc:  # send_batch failed the batch: its rows stay pending
        log.error("run %s: an upsert call was refused: %s", run_id, exc)
        with conn:
            if fail_run_if_hopeless(conn, settings, run_id):
                return Outcome(None, None, run_id=run_id, note="run failed")
        return Outcome(None, Step.EXTRACT, run_id=run_id,
                       countdown=step_retry_countdown(1), note="upsert refused")  # fmt: skip
    with conn, conn.cursor() as cur:
        ledger.touch_run(conn, settings, run_id)
    log.info(
        "run %s: %s upsert calls, sent %s / ok %s / refused %s (stale %s), credits %s, %.2f s",
        run_id, len(results), sum(r.sent for r in results), sum(r.marked for r in results),
        sum(r.refused for r in results), sum(r.stale for r in results),
        sum(r.credits for r in results), time.monotonic() - started,
    )  # fmt: skip
    return Outcome(None, Step.EXTRACT, run_id=run_id, note=f"{len(results)} upsert calls")
