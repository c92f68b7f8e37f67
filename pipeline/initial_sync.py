"""The initial sync: every pending row to Zoho in bulk jobs, as a crash-safe batch state machine.

A run keeps up to ``settings.batches_in_flight`` unfinished batches. Each batch is taken through
six steps, one function each; every step first reads the batch's state from the ledger and does
nothing when its work is already done, so a repeated or redelivered step is harmless::

    extract     claim ≤ batch_size free pending rows in key order       → extracted
    render      their claimed versions → CSV → zip on disk, sha256     → rendered
    upload      the zip (re-rendered first if missing or altered)      → uploaded (file_id)
    create_job  record the intent, then create the upsert job          → job_created (job_id)
    poll        GET the job until COMPLETED (or FAILED)                → job_done
    reconcile   download the result; ok rows marked synced (version-
                checked), skipped rows → row errors; claims released   → reconciled

Rules that make a crash at any point lose nothing and do nothing twice:

* Every step of a batch runs under a session advisory lock on the batch id, so two copies of
  a step (a redelivered message, a sweeper's re-enqueue) never overlap: the second waits, then
  finds the work done and does nothing. A killed worker's connection drops and its lock with it.
* ``file_id`` is recorded in the same transaction that moves the batch to ``uploaded``; a batch
  past ``rendered`` is never uploaded again.
* Job creation first records its intent (``job_requested_at``, the callback token's digest),
  then sends. Intent without a job id (a crash between sending and recording, or an ambiguous
  answer) is never followed by a blind second job: the job's callback (its URL carries this
  batch's token) names the job, the web process stores that id as ``job_hint``, and the poll
  step accepts it only after a GET shows the job's callback URL carries the token whose digest
  the batch holds. Only after ``settings.job_callback_wait`` seconds without it is a job created
  again (logged as a warning, counted in ``stats.jobs_recreated``).
* A FAILED job sends the batch back to ``rendered`` (new upload, new job) up to
  ``MAX_JOB_ATTEMPTS`` times, then fails the batch, which releases its rows: they go round again
  in a later batch of the run (a run gives up after ``MAX_FAILED_BATCHES`` failed batches).
* Rows Zoho skipped with a transient code (``TRANSIENT_ROW_CODES``) go round again; other codes
  count towards quarantine (``settings.max_attempts``; transient ones after
  ``TRANSIENT_ATTEMPTS_FACTOR`` times as many).
* Each claim is priced by the planner (:func:`choose_claim`): while a bulk job of the run's
  batch size is the cheaper way to send what is free, the claim is a bulk batch; otherwise
  (the retry rounds: rows Zoho skipped, rows edited in flight, a small tail) the ``upsert``
  step sends the free rows by Upsert calls of 100 with ``pipeline.realtime.send_batch``
  (``realtime`` batches of the same run, version-checked marking, row errors), then hands on
  to the run's next claim.
* A fatal error in poll or reconcile (a job Zoho no longer knows, a result file that cannot
  be read) is retried ``MAX_STEP_ERRORS`` times (counted per step in ``stats.step_errors``),
  then fails the batch with the reason, which releases its rows.
* :func:`stalled_batches` / :func:`stalled_runs` find batches and runs whose ``updated_at`` has
  not moved for too long: the sweeper re-enqueues the step their state calls for. Waiting steps
  (polling, waiting for a callback) touch ``updated_at`` so they are not swept.

Nothing here knows Celery: ``tasks.initial`` calls these functions and sends the step each
:class:`Outcome` names.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import secrets
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg2
import psycopg2.errors
from psycopg2 import sql
from psycopg2.extensions import connection as Connection
from psycopg2.extras import Json

from pipeline import ledger, planner, realtime
from pipeline.ledger import Batch, BatchKind, BatchState, RunKind, RunState
from pipeline.legacy.connection import connect, transaction
from pipeline.legacy.extract import claim, claiming, free_rows, require_idle
from pipeline.legacy.mark import RowError, mark_synced, record_row_errors
from pipeline.legacy.names import Names, key_type
from pipeline.legacy.render import ZIP_LEVEL, csv_name, header_line, sha256_file, zip_path
from pipeline.serialize import select_list, session_timezone_sql
from pipeline.settings import Settings
from pipeline.zoho.client import ZohoClient
from pipeline.zoho.errors import AmbiguousJobCreation, FatalZohoError, ZohoError
from pipeline.zoho.limits import BULK_JOB_MAX_ROWS
from pipeline.zoho.results import JobState, RowStatus, iter_result_rows

log = logging.getLogger(__name__)

CALLBACK_PREFIX = "/zoho/callback/"  # the web process's route (tasks.web.CALLBACK_PREFIX)
FIRST_POLL = 0.25  # seconds before the first poll of a job; doubled each poll
MAX_POLL = 60.0  # seconds: the longest wait between two polls
CALLBACK_RECHECK = 30.0  # seconds between checks while waiting for a job's callback
MAX_JOB_ATTEMPTS = 3  # jobs per batch (FAILED or refused) before the batch fails
MAX_FAILED_BATCHES = 5  # failed batches before a run gives up
BATCH_LOCK_CLASS = 0x05D0  # first key of the per-batch advisory lock (second: the batch id)
BATCH_LOCK_TIMEOUT = "120s"
# Zoho skips these rows for reasons of the moment: the rows go round again.
TRANSIENT_ROW_CODES = frozenset(
    {"LIMIT_EXCEEDED", "CANNOT_PROCESS", "RECORD_LOCKED", "UNPROCESSED", "INTERNAL_ERROR"}
    | {"TOO_MANY_REQUESTS", "LOCKED"}
)
TRANSIENT_ATTEMPTS_FACTOR = 3
MAX_STEP_ERRORS = 3  # fatal errors of one step (poll, reconcile) before the batch fails
STEP_RETRY_COUNTDOWN = 1.0  # seconds before a step that hit a fatal error runs again; doubled
MAX_UPSERT_CALLS = 100  # upsert calls one ``upsert`` step makes at most (then the next claim)
# Free rows counted at most per claim: above this a bulk job is always the cheaper way.
FREE_COUNT_CAP = BULK_JOB_MAX_ROWS + 1
_RUN_KINDS_SWEPT = (RunKind.INITIAL.value, RunKind.MANUAL.value, RunKind.INTERVAL.value)


class Step(StrEnum):
    """The six steps of a bulk batch, and the run's upsert step (task ``ordersync.<step>``)."""

    EXTRACT = "extract"
    RENDER = "render"
    UPLOAD = "upload"
    CREATE_JOB = "create_job"
    POLL = "poll"
    RECONCILE = "reconcile"
    UPSERT = "upsert"  # a run's step, like EXTRACT: its free rows by Upsert calls


# Steps that take the run id (the others take a batch id).
RUN_STEPS = frozenset({Step.EXTRACT, Step.UPSERT})
# The steps of a bulk batch, in order.
BULK_STEPS = (Step.EXTRACT, Step.RENDER, Step.UPLOAD, Step.CREATE_JOB, Step.POLL, Step.RECONCILE)


# The step that moves a batch on from each unfinished state.
NEXT_STEP: dict[BatchState, Step] = {
    BatchState.EXTRACTED: Step.RENDER,
    BatchState.RENDERED: Step.UPLOAD,
    BatchState.UPLOADED: Step.CREATE_JOB,
    BatchState.JOB_CREATED: Step.POLL,
    BatchState.JOB_DONE: Step.RECONCILE,
}


class RunInProgress(Exception):
    """An initial sync is already running; ``run_id`` and ``summary`` (its progress) say which."""

    def __init__(self, run_id: int, summary: dict[str, Any] | None = None) -> None:
        super().__init__(run_id, summary)
        self.run_id = run_id
        self.summary = dict(summary or {})

    def __str__(self) -> str:
        return f"initial sync run {self.run_id} is in progress"


@dataclass(frozen=True)
class Outcome:
    """What a step did and what should run next.

    ``next_step`` EXTRACT and UPSERT are for ``run_id`` (claim the run's next batch, send its
    free rows by upsert); any other step is for ``batch_id``; either after ``countdown``
    seconds. ``more`` asks for one more EXTRACT of the run (the in-flight window has room).
    None: nothing to send (done, or someone else carries on).
    """

    batch_id: int | None
    next_step: Step | None
    run_id: int | None = None
    countdown: float = 0.0
    more: bool = False
    note: str = ""


# ---------------------------------------------------------------------------------------------
# Pure decisions
# ---------------------------------------------------------------------------------------------


def poll_countdown(polls: int) -> float:
    """Seconds before poll number ``polls + 1`` of a job: 0.25, 0.5, 1, 2, … capped at 60."""
    return min(MAX_POLL, FIRST_POLL * 2 ** max(0, polls))


def window_has_room(open_batches: int, batches_in_flight: int) -> bool:
    """May the run claim another batch now?"""
    return open_batches < batches_in_flight


def run_is_done(open_batches: int, claimed: bool) -> bool:
    """A run is done when nothing could be claimed and none of its batches is unfinished."""
    return not claimed and open_batches == 0


def is_transient_row_code(code: str) -> bool:
    """Does Zoho's ``code`` for a skipped row mean "try again later" rather than "bad row"?"""
    return code.upper() in TRANSIENT_ROW_CODES


@dataclass(frozen=True)
class ClaimChoice:
    """How the run's next claim goes: one bulk batch of ``rows`` rows, or the free rows
    (``rows``) by Upsert calls (``kind`` REALTIME); ``plan`` is the planner's cheapest plan
    for all the free rows."""

    kind: BatchKind
    rows: int
    plan: planner.Plan


def choose_claim(free_rows: int, batch_size: int) -> ClaimChoice | None:
    """Bulk batch or upserts for the next claim of a run with ``free_rows`` sendable rows.

    A bulk batch (of ``min(free_rows, batch_size, 25,000)`` rows) only while the cheapest plan
    for the free rows has a bulk job *and* one bulk job of the batch's size is cheaper than
    sending its rows by upsert (a 1,000-row bulk batch would cost 500 credits for 100 credits
    of upserts). Otherwise every free row goes by upsert: the retry rounds (a few skipped or
    stale rows) and a tail below ~5,000 rows. Deciding claim by claim on what is left reaches
    the planner's mix: 26,000 rows → one bulk job, then 1,000 rows by ten upsert calls.
    None: nothing to send.
    """
    if free_rows <= 0:
        return None
    the_plan = planner.plan(free_rows)
    job_rows = min(free_rows, batch_size, BULK_JOB_MAX_ROWS)
    if the_plan.bulk_jobs and planner.plan(job_rows).bulk_jobs:
        return ClaimChoice(BatchKind.BULK, job_rows, the_plan)
    return ClaimChoice(BatchKind.REALTIME, free_rows, the_plan)


def step_retry_countdown(errors: int) -> float:
    """Seconds before a step runs again after its ``errors``-th fatal error: 1, 2, 4, …"""
    return STEP_RETRY_COUNTDOWN * 2 ** max(0, errors - 1)


def token_of(callback_url: str | None) -> str | None:
    """The callback token at the end of a job's callback URL, if it has our route."""
    if not callback_url:
        return None
    path = urlsplit(callback_url).path
    if CALLBACK_PREFIX not in path:
        return None
    token = path.rsplit(CALLBACK_PREFIX, 1)[1]
    return token or None


def token_digest(token: str) -> str:
    """SHA-256 of a callback token, hex: the ledger stores this, never the token."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------


def _t(settings: Settings, name: str) -> sql.Identifier:
    return sql.Identifier(settings.source.ledger_schema, name)


def start_initial_run(settings: Settings) -> int:
    """Create the ``runs`` row of an initial sync; its id. Raises :class:`RunInProgress`.

    One initial sync at a time per table and module: a partial unique index on
    ``runs (kind) WHERE state = 'running' AND kind = 'initial'`` makes the insert itself the check.
    """
    conn = connect(settings, application="ordersync-initial")
    try:
        n = Names(settings)
        try:
            with conn, conn.cursor() as cur:
                cur.execute(
                    sql.SQL("SELECT count(*) FROM {} WHERE NOT {}").format(n.table, n.synced)
                )
                pending = int(cur.fetchone()[0])  # type: ignore[index]
                cur.execute(
                    sql.SQL("INSERT INTO {} (kind, stats) VALUES (%s, %s) RETURNING id").format(
                        _t(settings, "runs")
                    ),
                    (RunKind.INITIAL.value, Json({"rows_total": pending})),
                )
                run_id = int(cur.fetchone()[0])  # type: ignore[index]
        except psycopg2.errors.UniqueViolation:
            with conn, conn.cursor() as cur:
                cur.execute(
                    sql.SQL(
                        "SELECT id FROM {} WHERE kind = %s AND state = %s ORDER BY id LIMIT 1"
                    ).format(_t(settings, "runs")),
                    (RunKind.INITIAL.value, RunState.RUNNING.value),
                )
                row = cur.fetchone()
            if row is None:  # it finished meanwhile: try once more
                return start_initial_run(settings)
            running = int(row[0])
            raise RunInProgress(running, _progress(conn, settings, running)) from None
    finally:
        conn.close()
    log.info("initial sync run %s started: %s rows pending", run_id, pending)
    return run_id


def run_progress(settings: Settings, run_id: int) -> dict[str, Any]:
    """Live progress of a run from the ledger (three queries; cheap enough to poll each second).

    Keys: ``run_id, state, rows_total, rows_done, rows_synced, rows_skipped, batches`` (count by
    state), ``credits_spent`` (credits charged to the run), ``started_at`` (ISO), ``elapsed_s``,
    ``rate_rows_s``, ``eta_s`` (None until a rate is known). ``rows_synced``: rows marked synced
    by the run's batches (bulk and upsert); ``rows_skipped``: rows whose latest Zoho error came
    from this run; ``rows_done``: synced plus quarantined (no longer retried), capped at
    ``rows_total``.
    """
    conn = connect(settings, application="ordersync-progress")
    try:
        return _progress(conn, settings, run_id)
    finally:
        conn.close()


def _progress(conn: Connection, settings: Settings, run_id: int) -> dict[str, Any]:
    with conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT state, started_at, coalesce(finished_at, now()), now(),"
                " coalesce((stats->>'rows_total')::bigint, 0) FROM {} WHERE id = %s"
            ).format(_t(settings, "runs")),
            (run_id,),
        )
        row = cur.fetchone()
        if row is None:
            raise LookupError(f"no run {run_id}")
        state, started_at, until, _now, total = row
        cur.execute(
            sql.SQL(
                "SELECT state, count(*),"
                " coalesce(sum(coalesce((stats->>'marked')::bigint, (stats->>'ok')::bigint)), 0)"
                " FROM {} WHERE run_id = %s GROUP BY state"
            ).format(_t(settings, "batches")),
            (run_id,),
        )
        batches: dict[str, int] = {}
        synced = 0
        for b_state, count, ok in cur.fetchall():
            batches[b_state] = int(count)
            synced += int(ok)
        # rows whose latest error came from this run: refused, and held back if quarantined
        cur.execute(
            sql.SQL(
                "SELECT count(*), count(*) FILTER (WHERE e.quarantined) FROM {} e"
                " JOIN {} b ON b.id = e.batch_id WHERE b.run_id = %s"
            ).format(_t(settings, "row_errors"), _t(settings, "batches")),
            (run_id,),
        )
        skipped, quarantined = (int(v) for v in cur.fetchone())  # type: ignore[union-attr]
        cur.execute(
            sql.SQL("SELECT coalesce(sum(credits), 0) FROM {} WHERE run_id = %s").format(
                _t(settings, "credit_ledger")
            ),
            (run_id,),
        )
        credits = int(cur.fetchone()[0])  # type: ignore[index]
    elapsed = max(0.0, (until - started_at).total_seconds())
    done = min(int(total), synced + quarantined) if total else synced + quarantined
    rate = done / elapsed if elapsed > 0 and done else 0.0
    eta = (max(0, int(total) - done) / rate) if rate > 0 else None
    return {
        "run_id": run_id,
        "state": state,
        "rows_total": int(total),
        "rows_done": done,
        "rows_synced": synced,
        "rows_skipped": skipped,
        "batches": batches,
        "credits_spent": credits,
        "started_at": started_at.isoformat(),
        "elapsed_s": round(elapsed, 3),
        "rate_rows_s": round(rate, 1),
        "eta_s": None if eta is None else round(eta, 1),
    }


# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------


@contextmanager
def batch_lock(conn: Connection, batch_id: int) -> Iterator[None]:
    """Hold the batch's session advisory lock (waiting at most ``BATCH_LOCK_TIMEOUT``).

    Two copies of a step never work on one batch at once. The lock is a session lock: it
    outlives the step's transactions and goes away with the connection if the process dies.
    """
    with conn.cursor() as cur:
        cur.execute("SET lock_timeout = %s", (BATCH_LOCK_TIMEOUT,))
        cur.execute("SELECT pg_advisory_lock(%s, %s)", (BATCH_LOCK_CLASS, batch_id))
        cur.execute("RESET lock_timeout")
    conn.commit()
    try:
        yield
    finally:
        try:
            conn.rollback()
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s, %s)", (BATCH_LOCK_CLASS, batch_id))
            conn.commit()
        except psycopg2.Error:  # connection lost: the server dropped the lock with the session
            log.warning("batch %s: could not release its lock; the connection is gone", batch_id)


def _touch(conn: Connection, settings: Settings, batch_id: int, stats: dict[str, Any]) -> None:
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("UPDATE {} SET updated_at = now(), stats = %s WHERE id = %s").format(
                _t(settings, "batches")
            ),
            (Json(stats), batch_id),
        )


def _set(conn: Connection, settings: Settings, batch_id: int, **fields: Any) -> None:
    """Set columns of a batch without changing its state (and touch ``updated_at``)."""
    sets = [sql.SQL("updated_at = now()")]
    params: list[Any] = []
    for name, value in fields.items():
        sets.append(sql.SQL("{} = %s").format(sql.Identifier(name)))
        params.append(Json(value) if name == "stats" else value)
    params.append(batch_id)
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("UPDATE {} SET {} WHERE id = %s").format(
                _t(settings, "batches"), sql.SQL(", ").join(sets)
            ),
            params,
        )


def _load(conn: Connection, settings: Settings, batch_id: int) -> Batch | None:
    batch = ledger.get_batch(conn, settings, batch_id)
    conn.commit()
    return batch


def _after_finish(batch: Batch, note: str) -> Outcome:
    """A finished batch hands on to its run's next claim."""
    if batch.run_id is None:
        return Outcome(batch.id, None, note=note)
    return Outcome(batch.id, Step.EXTRACT, run_id=batch.run_id, note=note)


def _nothing(batch_id: int, state: object) -> Outcome:
    return Outcome(batch_id, None, note=f"nothing to do in state {state}")


def _advance(
    conn: Connection,
    settings: Settings,
    batch: Batch,
    expected: BatchState,
    new_state: BatchState,
    then: Step,
    *,
    countdown: float = 0.0,
    **fields: Any,
) -> Outcome:
    """A step's last move: ``expected`` → ``new_state`` with ``fields``, committed, then
    ``then`` for the batch; nothing if another worker moved the batch meanwhile."""
    moved = ledger.transition(conn, settings, batch.id, new_state, expected=expected, **fields)
    conn.commit()
    if not moved:
        return _nothing(batch.id, "changed meanwhile")
    return Outcome(batch.id, then, run_id=batch.run_id, countdown=countdown)


# ---------------------------------------------------------------------------------------------
# Step 1: extract (claim)
# ---------------------------------------------------------------------------------------------


def count_free(cur: Any, settings: Settings, kt: sql.Composable, cap: int = FREE_COUNT_CAP) -> int:
    """Free (claimable) pending rows, counted up to ``cap``, in the caller's transaction."""
    free, _ = free_rows(cur, settings, kt)
    cur.execute(
        sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {} t WHERE {} LIMIT %s) AS f").format(
            Names(settings).table, free
        ),
        (cap,),
    )
    return int(cur.fetchone()[0])


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
            sql.SQL("SELECT state, kind FROM {} WHERE id = %s").format(_t(settings, "runs")),
            (run_id,),
        )
        row = cur.fetchone()
        if row is None or row[0] != RunState.RUNNING.value:
            return Outcome(None, None, run_id=run_id, note="run is not running")
        # an interval run priced its rows itself (pipeline.interval): it claims bulk only
        priced = row[1] != RunKind.INTERVAL.value
        cur.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE run_id = %s AND state NOT IN ({})").format(
                _t(settings, "batches"),
                ledger.finished_states_sql(),
            ),
            (run_id,),
        )
        open_batches = int(cur.fetchone()[0])  # type: ignore[index]
        if not window_has_room(open_batches, settings.batches_in_flight):
            return Outcome(None, None, run_id=run_id, note="in-flight window is full")
        limit = settings.batch_size
        choice = choose_claim(count_free(cur, settings, kt), limit) if priced else None
        if choice is not None and choice.kind is BatchKind.REALTIME:
            return Outcome(None, Step.UPSERT, run_id=run_id,
                           note=f"upserts: {choice.plan.describe()}")  # fmt: skip
        if choice is not None:
            limit = choice.rows
        claimed, _ = claim(cur, settings, kt, kind=BatchKind.BULK, limit=limit, run_id=run_id)
        cur.execute(
            sql.SQL("UPDATE {} SET updated_at = now() WHERE id = %s").format(_t(settings, "runs")),
            (run_id,),
        )
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
    more = window_has_room(open_batches + 1, settings.batches_in_flight)
    return Outcome(claimed.batch_id, Step.RENDER, run_id=run_id, more=more)


def fail_run_if_hopeless(conn: Connection, settings: Settings, run_id: int) -> bool:
    """Fail a run that has failed ``MAX_FAILED_BATCHES`` batches; True if it did."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE run_id = %s AND state = %s").format(
                _t(settings, "batches")
            ),
            (run_id, BatchState.FAILED.value),
        )
        failed = int(cur.fetchone()[0])  # type: ignore[index]
    if failed < MAX_FAILED_BATCHES:
        return False
    ledger.finish_run(
        conn, settings, run_id, RunState.FAILED, f"{failed} batches failed; giving up"
    )
    log.error("run %s failed: %s batches failed", run_id, failed)
    return True


def upsert(conn: Connection, settings: Settings, client: ZohoClient, run_id: int) -> Outcome:
    """Send the run's free rows by Upsert calls of 100, then hand on to the run's next claim.

    Each call is one ``realtime`` batch of the run (``pipeline.realtime.send_batch``: claim,
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
            sql.SQL("SELECT state FROM {} WHERE id = %s").format(_t(settings, "runs")), (run_id,)
        )
        row = cur.fetchone()
        if row is None or row[0] != RunState.RUNNING.value:
            return Outcome(None, None, run_id=run_id, note="run is not running")
        free = count_free(cur, settings, key_type(conn, settings))
    choice = choose_claim(free, settings.batch_size)
    if choice is None or choice.kind is BatchKind.BULK:
        return Outcome(None, Step.EXTRACT, run_id=run_id, note="a bulk claim, or nothing")
    results: list[realtime.BatchResult] = []
    try:
        while sum(r.sent for r in results) < choice.rows and len(results) < MAX_UPSERT_CALLS:
            result = realtime.send_batch(conn, settings, client, run_id=run_id)
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
        cur.execute(
            sql.SQL("UPDATE {} SET updated_at = now() WHERE id = %s").format(_t(settings, "runs")),
            (run_id,),
        )
    log.info(
        "run %s: %s upsert calls, sent %s / ok %s / refused %s (stale %s), credits %s, %.2f s",
        run_id, len(results), sum(r.sent for r in results), sum(r.marked for r in results),
        sum(r.refused for r in results), sum(r.stale for r in results),
        sum(r.credits for r in results), time.monotonic() - started,
    )  # fmt: skip
    return Outcome(None, Step.EXTRACT, run_id=run_id, note=f"{len(results)} upsert calls")


# ---------------------------------------------------------------------------------------------
# Step 2: render
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rendered:
    path: Path
    checksum: str
    rows: int
    size: int


def render_zip(conn: Connection, settings: Settings, batch: Batch) -> Rendered:
    """Write the batch's zip from its claimed rows, as they stand at their claimed versions.

    A row edited since the claim (its version moved on) is left out: it stays pending and goes
    in a later batch. The zip is written aside and renamed, so it is whole or absent. Runs in
    its own short transaction (read only). The key range keeps the join to an index range scan.
    """
    n = Names(settings)
    batch_id = batch.id
    work = Path(settings.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    final = zip_path(settings, batch_id)
    partial = final.with_name(f".{final.name}.{os.getpid()}.part")
    sink = io.BytesIO()
    sink.write(header_line(settings.mapping))
    try:
        with conn.cursor() as cur:
            cur.execute(session_timezone_sql(settings.org_timezone))
            query = sql.SQL(
                """SELECT {exprs} FROM {table} t
                   JOIN (SELECT c.k, c.v FROM {batches} b, unnest(b.keys, b.versions) AS c(k, v)
                         WHERE b.id = {batch}) AS c ON t.{key} = c.k::{kt} AND t.{version} = c.v
                   WHERE t.{key} BETWEEN {lo}::{kt} AND {hi}::{kt}
                   ORDER BY t.{key}"""
            ).format(
                lo=sql.Literal(batch.key_lo),
                hi=sql.Literal(batch.key_hi),
                exprs=select_list(settings.mapping, "t"),
                table=n.table,
                batches=n.ledger_table("batches"),
                batch=sql.Literal(batch_id),
                key=n.key,
                kt=key_type(conn, settings),
                version=n.version,
            )
            cur.copy_expert(
                sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv, HEADER false)")
                .format(query)
                .as_string(conn),
                sink,
            )
            rows = cur.rowcount
        conn.commit()
        with (
            zipfile.ZipFile(
                partial, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=ZIP_LEVEL
            ) as archive,
            archive.open(csv_name(batch_id), "w", force_zip64=True) as entry,
        ):
            entry.write(sink.getbuffer())
        os.replace(partial, final)
    finally:
        sink.close()
        partial.unlink(missing_ok=True)
    return Rendered(final, sha256_file(final), rows, final.stat().st_size)


def zip_is_intact(batch: Batch) -> bool:
    """Is the batch's zip on disk with the checksum recorded for it?"""
    if not batch.zip_path or not batch.checksum:
        return False
    path = Path(batch.zip_path)
    return path.is_file() and sha256_file(path) == batch.checksum


def render(conn: Connection, settings: Settings, batch_id: int) -> Outcome:
    """``extracted`` → ``rendered``: the zip on disk, its checksum and row count recorded."""
    with batch_lock(conn, batch_id):
        batch = _load(conn, settings, batch_id)
        if batch is None or batch.state is not BatchState.EXTRACTED:
            return _nothing(batch_id, batch and batch.state)
        rendered = render_zip(conn, settings, batch)
        stats = {**batch.stats, "claimed": batch.row_count, "sent": rendered.rows}
        if rendered.rows == 0:  # every claimed row changed since: they go in a later batch
            ledger.transition(conn, settings, batch_id, batch.state, stats=stats)
            ledger.finish_batch(conn, settings, batch_id, BatchState.RECONCILED)
            conn.commit()
            rendered.path.unlink(missing_ok=True)
            return _after_finish(batch, "no row left at its claimed version")
        return _advance(
            conn, settings, batch, BatchState.EXTRACTED, BatchState.RENDERED, Step.UPLOAD,
            zip_path=str(rendered.path), zip_bytes=rendered.size, checksum=rendered.checksum,
            stats=stats,
        )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Step 3: upload
# ---------------------------------------------------------------------------------------------


def upload(conn: Connection, settings: Settings, client: ZohoClient, batch_id: int) -> Outcome:
    """``rendered`` → ``uploaded`` with Zoho's ``file_id``. Never uploads a batch twice: the
    file id is recorded with the state, and a batch past ``rendered`` is left alone.
    """
    with batch_lock(conn, batch_id):
        batch = _load(conn, settings, batch_id)
        if batch is None or batch.state is not BatchState.RENDERED:
            return _nothing(batch_id, batch and batch.state)
        if not zip_is_intact(batch):
            log.warning("batch %s: zip missing or altered; rendering it again", batch_id)
            rendered = render_zip(conn, settings, batch)
            _set(
                conn, settings, batch_id, zip_path=str(rendered.path), zip_bytes=rendered.size,
                checksum=rendered.checksum, stats={**batch.stats, "sent": rendered.rows},
            )  # fmt: skip
            conn.commit()
            batch = _load(conn, settings, batch_id)
            assert batch is not None
        try:
            file_id = client.upload(Path(batch.zip_path or ""))
        except FatalZohoError as exc:  # refused (too large, bad file): count it like a job
            return _job_failed(conn, settings, batch, f"upload refused: {exc}")
        return _advance(
            conn, settings, batch, BatchState.RENDERED, BatchState.UPLOADED, Step.CREATE_JOB,
            file_id=file_id,
        )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Step 4: create the job
# ---------------------------------------------------------------------------------------------


def _seconds_since(moment: datetime) -> float:
    return (datetime.now(UTC) - moment).total_seconds()


def create_job(
    conn: Connection,
    settings: Settings,
    client: ZohoClient,
    batch_id: int,
    *,
    new_token: Any = None,
) -> Outcome:
    """``uploaded`` → ``job_created``: record the intent, create the job, record its id.

    With a callback URL configured, the job calls back on ``<callback_url>/zoho/callback/<token>``
    with a fresh token per attempt (``new_token()``; its digest is stored). An earlier intent
    without a job id is waited on (callback) for ``settings.job_callback_wait`` seconds before a
    new job is created.
    """
    with batch_lock(conn, batch_id):
        batch = _load(conn, settings, batch_id)
        if batch is None or batch.state is not BatchState.UPLOADED:
            return _nothing(batch_id, batch and batch.state)
        stats = dict(batch.stats)
        if batch.job_requested_at is not None:
            if batch.job_hint:  # a callback named a job: the poll step checks and takes it
                return Outcome(batch_id, Step.POLL, run_id=batch.run_id, note="callback hint")
            waited = _seconds_since(batch.job_requested_at)
            wait = settings.job_callback_wait if settings.zoho.callback_url else 0.0
            if waited < wait:
                _touch(conn, settings, batch_id, stats)
                conn.commit()
                countdown = min(CALLBACK_RECHECK, wait - waited)
                return Outcome(
                    batch_id, Step.CREATE_JOB, run_id=batch.run_id, countdown=countdown,
                    note="waiting for the job's callback",
                )  # fmt: skip
            stats["jobs_recreated"] = int(stats.get("jobs_recreated", 0)) + 1
            log.warning(
                "batch %s: no job id %.0f s after create-job was sent; creating the job again",
                batch_id, waited,
            )  # fmt: skip
        token: str | None = None
        callback_url: str | None = None
        if settings.zoho.callback_url:
            token = new_token() if new_token is not None else _new_token()
            callback_url = settings.zoho.callback_url.rstrip("/") + CALLBACK_PREFIX + token
        with conn.cursor() as cur:  # the intent, committed before anything is sent
            cur.execute(
                sql.SQL(
                    "UPDATE {} SET job_requested_at = now(), callback_digest = %s,"
                    " job_hint = NULL, job_requests = job_requests + 1, stats = %s,"
                    " updated_at = now() WHERE id = %s AND state = %s"
                ).format(_t(settings, "batches")),
                (
                    None if token is None else token_digest(token),
                    Json(stats),
                    batch_id,
                    BatchState.UPLOADED.value,
                ),
            )
        conn.commit()
        try:
            job_id = client.create_upsert_job(
                batch.file_id or "", settings.mapping, callback_url=callback_url,
                run_id=batch.run_id, batch_id=batch_id,
            )  # fmt: skip
        except AmbiguousJobCreation as exc:
            log.warning("batch %s: %s; waiting for the job's callback", batch_id, exc)
            wait = settings.job_callback_wait if callback_url else 0.0
            return Outcome(batch_id, Step.CREATE_JOB, run_id=batch.run_id,
                           countdown=min(CALLBACK_RECHECK, wait), note="ambiguous")  # fmt: skip
        except FatalZohoError as exc:  # refused: no job exists
            _set(conn, settings, batch_id, job_requested_at=None, callback_digest=None)
            conn.commit()
            return _job_failed(conn, settings, batch, f"create-job refused: {exc}")
        except ZohoError:  # transient and not sent (429, budget, no slot): no job exists
            _set(conn, settings, batch_id, job_requested_at=None, callback_digest=None)
            conn.commit()
            raise
        return _advance(
            conn, settings, batch, BatchState.UPLOADED, BatchState.JOB_CREATED, Step.POLL,
            countdown=poll_countdown(0), job_id=job_id, job_hint=None,
            stats={**stats, "polls": 0},
        )  # fmt: skip


def _new_token() -> str:
    return secrets.token_urlsafe(32)


def record_job_hint(settings: Settings, batch_id: int, job_id: str) -> bool:
    """Store a job id a callback named for a batch that sent create-job without learning the
    id (the web process calls this; the poll step verifies it with a GET). True if stored.
    """
    with transaction(settings, "ordersync-web") as cur:
        cur.execute(
            sql.SQL(
                "UPDATE {} SET job_hint = %s WHERE id = %s AND state = %s"
                " AND job_id IS NULL AND job_requested_at IS NOT NULL"
            ).format(_t(settings, "batches")),
            (job_id[:100], batch_id, BatchState.UPLOADED.value),
        )
        return cur.rowcount == 1


def batch_by_token(settings: Settings, token: str) -> int | None:
    """The unfinished batch whose callback token this is (looked up by its digest), or None."""
    with transaction(settings, "ordersync-web") as cur:
        cur.execute(
            sql.SQL("SELECT id FROM {} WHERE callback_digest = %s AND state NOT IN ({})").format(
                _t(settings, "batches"),
                ledger.finished_states_sql(),
            ),
            (token_digest(token),),
        )
        row = cur.fetchone()
    return None if row is None else int(row[0])


# ---------------------------------------------------------------------------------------------
# Step 5: poll
# ---------------------------------------------------------------------------------------------


def _adopt_hint(conn: Connection, settings: Settings, client: ZohoClient, batch: Batch) -> bool:
    """Take the job a callback named, if Zoho confirms it calls back with this batch's token."""
    hint = batch.job_hint or ""
    try:
        job = client.get_job(hint)
    except FatalZohoError as exc:  # Zoho does not know that job: not ours either
        log.warning("batch %s: job %s named by a callback: %s", batch.id, hint, exc)
        job = None
    token = None if job is None else token_of(job.callback_url)
    if job is None or token is None or token_digest(token) != batch.callback_digest:
        log.warning("batch %s: job %s named by a callback is not ours; ignored", batch.id, hint)
        _set(conn, settings, batch.id, job_hint=None)
        conn.commit()
        return False
    moved = ledger.transition(
        conn, settings, batch.id, BatchState.JOB_CREATED, expected=BatchState.UPLOADED,
        job_id=job.id, job_hint=None, stats={**batch.stats, "polls": 0},
    )  # fmt: skip
    conn.commit()
    log.info("batch %s: job %s learnt from its callback", batch.id, job.id)
    return moved


def poll(conn: Connection, settings: Settings, client: ZohoClient, batch_id: int) -> Outcome:
    """``job_created`` → ``job_done`` once Zoho says COMPLETED; FAILED → :func:`_job_failed`;
    a fatal answer (the job is unknown) → :func:`_step_error`.

    Not finished yet: touch the batch and ask to be polled again after a growing countdown.
    Also resolves a job id named by a callback for a batch still waiting on its create intent.
    """
    with batch_lock(conn, batch_id):
        batch = _load(conn, settings, batch_id)
        if batch is None:
            return _nothing(batch_id, None)
        if batch.state is BatchState.UPLOADED and batch.job_hint:
            if not _adopt_hint(conn, settings, client, batch):
                return _nothing(batch_id, "hint refused")
            batch = _load(conn, settings, batch_id)
            assert batch is not None
        if batch.state is not BatchState.JOB_CREATED:
            return _nothing(batch_id, batch.state)
        try:
            job = client.get_job(batch.job_id or "")
        except FatalZohoError as exc:  # e.g. RESOURCE_NOT_FOUND: Zoho no longer knows the job
            return _step_error(conn, settings, batch, Step.POLL, f"job {batch.job_id}: {exc}")
        stats = dict(batch.stats)
        if not job.terminal:
            polls = int(stats.get("polls", 0)) + 1
            stats["polls"] = polls
            if job.total is not None:  # Zoho's counts so far, for the progress line
                stats["job_processed"] = sum(n or 0 for n in (job.added, job.updated, job.skipped))
            _touch(conn, settings, batch_id, stats)
            conn.commit()
            return Outcome(
                batch_id, Step.POLL, run_id=batch.run_id, countdown=poll_countdown(polls)
            )
        if job.state is JobState.FAILED:
            return _job_failed(conn, settings, batch, f"job {job.id} FAILED")
        stats.update(
            download_url=job.download_url, added=job.added, updated=job.updated,
            skipped_by_zoho=job.skipped,
        )  # fmt: skip
        return _advance(
            conn, settings, batch, BatchState.JOB_CREATED, BatchState.JOB_DONE, Step.RECONCILE,
            stats=stats,
        )  # fmt: skip


def _job_failed(conn: Connection, settings: Settings, batch: Batch, reason: str) -> Outcome:
    """A job failed (or was refused): new upload and job, or after ``MAX_JOB_ATTEMPTS`` fail the
    batch, releasing its rows to go round again.
    """
    attempts = batch.attempts + 1
    if attempts < MAX_JOB_ATTEMPTS:
        log.warning("batch %s: %s; attempt %s of %s", batch.id, reason, attempts + 1,
                    MAX_JOB_ATTEMPTS)  # fmt: skip
        moved = ledger.transition(
            conn, settings, batch.id, BatchState.RENDERED, expected=batch.state,
            attempts=attempts, error=reason, file_id=None, job_id=None, job_requested_at=None,
            callback_digest=None, job_hint=None,
        )  # fmt: skip
        conn.commit()
        return Outcome(batch.id, Step.UPLOAD if moved else None, run_id=batch.run_id)
    log.error("batch %s: %s; giving up after %s jobs, rows released", batch.id, reason, attempts)
    return _fail_batch(conn, settings, batch, reason, attempts=attempts)


def _fail_batch(
    conn: Connection, settings: Settings, batch: Batch, reason: str, **fields: Any
) -> Outcome:
    """End the batch ``failed`` with ``reason`` (and ``fields``): its claims are released and
    its rows go round again in a later claim of the run; the run fails if hopeless."""
    if fields:
        ledger.transition(conn, settings, batch.id, batch.state, **fields)
    ledger.finish_batch(conn, settings, batch.id, BatchState.FAILED, reason)
    if batch.run_id is not None and fail_run_if_hopeless(conn, settings, batch.run_id):
        conn.commit()
        return Outcome(batch.id, None, run_id=batch.run_id, note="run failed")
    conn.commit()
    _cleanup(settings, batch)
    return _after_finish(batch, "batch failed")


def _step_error(
    conn: Connection, settings: Settings, batch: Batch, step: Step, reason: str
) -> Outcome:
    """A fatal error in ``step`` (poll, reconcile): counted in ``stats.step_errors[step]``, the
    step runs again after a short countdown, and after ``MAX_STEP_ERRORS`` the batch fails
    with the reason. Without this a failing task would be re-sent by the sweeper for ever.
    """
    conn.rollback()  # nothing the step did before the error is kept
    counts = dict(batch.stats.get("step_errors") or {})
    errors = int(counts.get(step.value, 0)) + 1
    counts[step.value] = errors
    stats = {**batch.stats, "step_errors": counts}
    reason = f"{step.value}: {reason}"
    if errors < MAX_STEP_ERRORS:
        log.warning("batch %s: %s (error %s of %s); %s again shortly",
                    batch.id, reason, errors, MAX_STEP_ERRORS, step.value)  # fmt: skip
        _set(conn, settings, batch.id, error=reason, stats=stats)
        conn.commit()
        return Outcome(batch.id, step, run_id=batch.run_id,
                       countdown=step_retry_countdown(errors), note=reason)  # fmt: skip
    log.error("batch %s: %s; failed after %s errors, rows released", batch.id, reason, errors)
    return _fail_batch(conn, settings, batch, reason, stats=stats)


# ---------------------------------------------------------------------------------------------
# Step 6: reconcile
# ---------------------------------------------------------------------------------------------


def result_path(settings: Settings, batch_id: int) -> Path:
    """Where batch ``batch_id``'s downloaded result zip is kept until reconciled."""
    return Path(settings.work_dir) / f"result-{batch_id:08d}.zip"


def _cleanup(settings: Settings, batch: Batch) -> None:
    if batch.zip_path:
        Path(batch.zip_path).unlink(missing_ok=True)
    result_path(settings, batch.id).unlink(missing_ok=True)


def reconcile(conn: Connection, settings: Settings, client: ZohoClient, batch_id: int) -> Outcome:
    """``job_done`` → ``reconciled``: the result file decides each row, in one transaction.

    ADDED/UPDATED → ``mark_synced`` with the record id (version-checked: a row edited since its
    claim stays pending); SKIPPED/UNPROCESSED → ``record_row_errors`` (transient codes with a
    larger quarantine allowance); the claims are released. One summary log line per batch.
    A result that cannot be had or read → :func:`_step_error`.
    """
    started = time.monotonic()
    with batch_lock(conn, batch_id):
        batch = _load(conn, settings, batch_id)
        if batch is None or batch.state is not BatchState.JOB_DONE:
            return _nothing(batch_id, batch and batch.state)
        try:
            ok, permanent, transient = _read_result(settings, client, batch)
        except (FatalZohoError, zipfile.BadZipFile, csv.Error, UnicodeDecodeError) as exc:
            return _step_error(conn, settings, batch, Step.RECONCILE, str(exc) or repr(exc))
        marked = mark_synced(conn, settings, batch_id, ok)
        errors = record_row_errors(conn, settings, batch_id, permanent)
        retry = record_row_errors(
            conn,
            replace(settings, max_attempts=settings.max_attempts * TRANSIENT_ATTEMPTS_FACTOR),
            batch_id,
            transient,
        )
        credits = _batch_credits(conn, settings, batch_id)
        seconds = (datetime.now(UTC) - batch.created_at).total_seconds()
        stats = {
            **batch.stats, "ok": marked.marked, "stale": marked.stale,
            "errors": len(permanent), "retry": len(transient),
            "quarantined": errors.quarantined + retry.quarantined,
            "credits": credits, "seconds": round(seconds, 3),
        }  # fmt: skip
        ledger.transition(conn, settings, batch_id, BatchState.JOB_DONE, stats=stats)
        finished = ledger.finish_batch(conn, settings, batch_id, BatchState.RECONCILED)
        conn.commit()
    if not finished:
        return _nothing(batch_id, "changed meanwhile")
    _cleanup(settings, batch)
    log.info(
        "batch %s reconciled: sent %s / ok %s / skipped %s / failed %s (stale %s, retry %s),"
        " credits %s, %.1f s (reconcile %.2f s)",
        batch_id, stats.get("sent", batch.row_count), marked.marked,
        len(permanent) + len(transient), len(permanent), marked.stale, len(transient),
        credits, seconds, time.monotonic() - started,
    )  # fmt: skip
    return _after_finish(batch, "reconciled")


def _read_result(
    settings: Settings, client: ZohoClient, batch: Batch
) -> tuple[list[tuple[str, str | None]], list[RowError], list[RowError]]:
    """Download and read the batch's result: (ok keys with record ids, permanent errors,
    transient errors)."""
    url = batch.stats.get("download_url") or client.get_job(batch.job_id or "").download_url
    if not url:
        raise FatalZohoError("RESULT_FORMAT", f"job {batch.job_id} has no download URL")
    path = client.download_result(str(url), result_path(settings, batch.id))
    ok: list[tuple[str, str | None]] = []
    permanent: list[RowError] = []
    transient: list[RowError] = []
    for row in iter_result_rows(path, settings.mapping.unique_field):
        if row.ok:
            ok.append((row.key, row.record_id))
            continue
        first = row.errors[0] if row.errors else None
        code = (
            first.code
            if first
            else ("UNPROCESSED" if row.status is RowStatus.UNPROCESSED else "SKIPPED")
        )
        error = RowError(row.key, code, ",".join(first.fields) if first else None, None)
        (transient if is_transient_row_code(code) else permanent).append(error)
    return ok, permanent, transient


def _batch_credits(conn: Connection, settings: Settings, batch_id: int) -> int:
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT coalesce(sum(credits), 0) FROM {} WHERE batch_id = %s").format(
                _t(settings, "credit_ledger")
            ),
            (batch_id,),
        )
        return int(cur.fetchone()[0])  # type: ignore[index]


# ---------------------------------------------------------------------------------------------
# The sweeper
# ---------------------------------------------------------------------------------------------


def stalled_batches(settings: Settings, older_than: float) -> list[tuple[int, Step]]:
    """Unfinished bulk batches whose ``updated_at`` is older than ``older_than`` seconds, with
    the step to re-run for each (by its state), oldest first.
    """
    with transaction(settings, "ordersync-sweeper") as cur:
        cur.execute(
            sql.SQL(
                "SELECT id, state FROM {} WHERE kind = %s AND state = ANY(%s)"
                " AND updated_at < now() - make_interval(secs => %s) ORDER BY updated_at"
            ).format(_t(settings, "batches")),
            (BatchKind.BULK.value, [s.value for s in NEXT_STEP], float(older_than)),
        )
        rows = cur.fetchall()
    return [(int(batch_id), NEXT_STEP[BatchState(state)]) for batch_id, state in rows]


def stalled_runs(settings: Settings, older_than: float) -> list[int]:
    """Running bulk runs with room in their window and no claim for ``older_than`` seconds:
    their chain of claims was lost (a worker died in extract, a message was lost).
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
                runs=_t(settings, "runs"),
                batches=_t(settings, "batches"),
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
