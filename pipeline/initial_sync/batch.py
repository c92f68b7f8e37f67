"""The state check every step shares: the batch lock, load, compare-and-set moves, failures."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.errors
from psycopg2 import sql
from psycopg2.extensions import connection as Connection

from pipeline import ledger
from pipeline.initial_sync.decisions import (
    BATCH_LOCK_TIMEOUT,
    MAX_FAILED_BATCHES,
    MAX_JOB_ATTEMPTS,
    MAX_STEP_ERRORS,
    Outcome,
    Step,
    step_retry_countdown,
)
from pipeline.ledger import BATCH_LOCK_CLASS, Batch, BatchState, RunState
from pipeline.settings import Settings

log = logging.getLogger(__name__)


def table(settings: Settings, name: str) -> sql.Identifier:
    return sql.Identifier(settings.source.ledger_schema, name)


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


def touch(conn: Connection, settings: Settings, batch_id: int, stats: dict[str, Any]) -> None:
    ledger.set_batch(conn, settings, batch_id, stats=stats)


def set_fields(conn: Connection, settings: Settings, batch_id: int, **fields: Any) -> None:
    """Set columns of a batch without changing its state (and touch ``updated_at``)."""
    ledger.set_batch(conn, settings, batch_id, **fields)


def load(conn: Connection, settings: Settings, batch_id: int) -> Batch | None:
    batch = ledger.get_batch(conn, settings, batch_id)
    conn.commit()
    return batch


def after_finish(batch: Batch, note: str) -> Outcome:
    """A finished batch hands on to its run's next claim."""
    if batch.run_id is None:
        return Outcome(batch.id, None, note=note)
    return Outcome(batch.id, Step.EXTRACT, run_id=batch.run_id, note=note)


def nothing(batch_id: int, state: object) -> Outcome:
    return Outcome(batch_id, None, note=f"nothing to do in state {state}")


def advance(
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
        return nothing(batch.id, "changed meanwhile")
    return Outcome(batch.id, then, run_id=batch.run_id, countdown=countdown)


def seconds_since(moment: datetime) -> float:
    return (datetime.now(UTC) - moment).total_seconds()


def job_failed(conn: Connection, settings: Settings, batch: Batch, reason: str) -> Outcome:
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
    return fail_batch(conn, settings, batch, reason, attempts=attempts)


def fail_batch(
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
    cleanup(settings, batch)
    return after_finish(batch, "batch failed")


def step_error(
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
        set_fields(conn, settings, batch.id, error=reason, stats=stats)
        conn.commit()
        return Outcome(batch.id, step, run_id=batch.run_id,
                       countdown=step_retry_countdown(errors), note=reason)  # fmt: skip
    log.error("batch %s: %s; failed after %s errors, rows released", batch.id, reason, errors)
    return fail_batch(conn, settings, batch, reason, stats=stats)


def fail_run_if_hopeless(conn: Connection, settings: Settings, run_id: int) -> bool:
    """Fail a run that has failed ``MAX_FAILED_BATCHES`` batches; True if it did."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE run_id = %s AND state = %s").format(
                table(settings, "batches")
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


def result_path(settings: Settings, batch_id: int) -> Path:
    """Where batch ``batch_id``'s downloaded result zip is kept until reconciled."""
    return Path(settings.work_dir) / f"result-{batch_id:08d}.zip"


def cleanup(settings: Settings, batch: Batch) -> None:
    if batch.zip_path:
        Path(batch.zip_path).unlink(missing_ok=True)
    result_path(settings, batch.id).unlink(missing_ok=True)
