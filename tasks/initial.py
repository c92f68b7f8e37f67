"""The initial sync's tasks: one thin task per step of a bulk batch, chained by hand.

Each task takes ids only (``run_id`` or ``batch_id``, as keywords so they reach the log lines),
calls one function of :mod:`pipeline.initial_sync` (which checks the batch's state in the ledger
and does nothing if its step is done), and sends the step the outcome names. The chain is built
by hand, one message at a time, rather than as a Celery ``chain``: each message carries only the
batch id, the ledger says where the batch stands, and the sweeper can restart a batch at any
step by sending that one task. A chain object would carry the remaining steps in the message
and be lost with it.

Queues: claiming and rendering are database work (``Queue.DB``); upload, create job, poll,
reconcile (which starts with the result download) and upsert (a run's rows that are cheaper by
Upsert calls than by a bulk job) call Zoho (``Queue.ZOHO``).
"""

from __future__ import annotations

import logging
from typing import Any

from psycopg2.extensions import connection as Connection

from pipeline import initial_sync as sync
from pipeline.initial_sync import Outcome, Step
from pipeline.upserts import release_abandoned
from tasks.app import app
from tasks.base import worker_client, worker_db, worker_settings
from tasks.schedule import REALTIME_CHECK
from tasks.steps import TASK_NAMES, send_step

logger = logging.getLogger(__name__)

START = "ordersync.initial.start"
SWEEP = "ordersync.sweep"


def hand_on(outcome: Outcome, conn: Connection | None = None) -> dict[str, Any]:
    """Send what the outcome names (recording when a countdown makes it due); a small dict for
    the task's result and logs."""
    if conn is not None:
        sync.expect_next(conn, worker_settings(), outcome)
    if outcome.next_step is not None:
        send_step(app, outcome.next_step, run_id=outcome.run_id, batch_id=outcome.batch_id,
                  countdown=outcome.countdown)  # fmt: skip
    if outcome.wake is not None:  # a batch waiting for a job slot: one just freed
        send_step(app, Step.CREATE_JOB, run_id=outcome.run_id, batch_id=outcome.wake)
    if outcome.more and outcome.run_id is not None:
        send_step(app, Step.EXTRACT, run_id=outcome.run_id)
    next_step = outcome.next_step.value if outcome.next_step else None
    return {"batch_id": outcome.batch_id, "next": next_step, "note": outcome.note}


@app.task(name=START)
def start(*, run_id: int) -> dict[str, Any]:
    """Begin a run created by ``pipeline.initial_sync.start_initial_run``: its first claim."""
    return hand_on(Outcome(None, Step.EXTRACT, run_id=run_id))


@app.task(name=TASK_NAMES[Step.EXTRACT])
def extract(*, run_id: int) -> dict[str, Any]:
    with worker_db() as conn:
        return hand_on(sync.extract(conn, worker_settings(), run_id), conn)


@app.task(name=TASK_NAMES[Step.RENDER])
def render(*, batch_id: int, run_id: int | None = None) -> dict[str, Any]:
    with worker_db() as conn:
        return hand_on(sync.render(conn, worker_settings(), batch_id), conn)


@app.task(name=TASK_NAMES[Step.UPLOAD])
def upload(*, batch_id: int, run_id: int | None = None) -> dict[str, Any]:
    with worker_db() as conn:
        return hand_on(sync.upload(conn, worker_settings(), worker_client(), batch_id), conn)


@app.task(name=TASK_NAMES[Step.CREATE_JOB])
def create_job(*, batch_id: int, run_id: int | None = None) -> dict[str, Any]:
    with worker_db() as conn:
        return hand_on(sync.create_job(conn, worker_settings(), worker_client(), batch_id), conn)


@app.task(bind=True, name=TASK_NAMES[Step.POLL])
def poll(
    self: Any, *, batch_id: int, run_id: int | None = None, by_callback: bool = False
) -> dict[str, Any]:
    """Poll the batch's job; not finished → this task again after a growing countdown (not
    for a poll ``by_callback``: the batch's own chain of polls goes on)."""
    with worker_db() as conn:
        outcome = sync.poll(
            conn, worker_settings(), worker_client(), batch_id, by_callback=by_callback
        )
        if outcome.next_step is Step.POLL and outcome.batch_id == batch_id:
            sync.expect_next(conn, worker_settings(), outcome)
            self.schedule_again(outcome.countdown, batch_id=batch_id, run_id=outcome.run_id)
            return {"batch_id": batch_id, "next": "poll", "note": f"in {outcome.countdown}s"}
        return hand_on(outcome, conn)


@app.task(name=TASK_NAMES[Step.RECONCILE])
def reconcile(*, batch_id: int, run_id: int | None = None) -> dict[str, Any]:
    with worker_db() as conn:
        return hand_on(sync.reconcile(conn, worker_settings(), worker_client(), batch_id), conn)


@app.task(name=TASK_NAMES[Step.UPSERT])
def upsert(*, run_id: int) -> dict[str, Any]:
    """Send the run's free rows by Upsert calls (the planner found them cheaper that way)."""
    with worker_db() as conn:
        return hand_on(sync.upsert(conn, worker_settings(), worker_client(), run_id), conn)


@app.task(name=SWEEP)
def sweep(*, older_than: float | None = None) -> dict[str, Any]:
    """Re-enqueue the step of every stalled batch and the claim of every stalled run; end the
    upsert batches whose worker died, and hand their rows on at once (their run's next claim,
    a near-real-time check)."""
    settings = worker_settings()
    with worker_db() as conn:
        released = release_abandoned(conn, settings)
        resume = sync.resume_released(conn, settings, released)
    for run_id in resume.runs:
        send_step(app, Step.EXTRACT, run_id=run_id)
    if resume.realtime_check:
        app.send_task(REALTIME_CHECK)
    threshold, run_threshold = sync.sweep_thresholds(settings, older_than)
    batches = sync.stalled_batches(settings, threshold)
    for batch_id, step in batches:
        logger.warning("batch %s stalled: re-enqueueing %s", batch_id, step)
        send_step(app, step, batch_id=batch_id)
    runs = [r for r in sync.stalled_runs(settings, run_threshold) if r not in resume.runs]
    for run_id in runs:
        logger.warning("run %s stalled: re-enqueueing its next claim", run_id)
        send_step(app, Step.EXTRACT, run_id=run_id)
    return {"batches": [b for b, _ in batches], "runs": runs, "released": released,
            "resumed": list(resume.runs)}  # fmt: skip
