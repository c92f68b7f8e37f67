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
  the batch holds. Only after as long as the job could take without it (``callback_wait``: its
  rows at the speed of finished jobs, x2 + 10 s, at least 30 s, at most
  ``settings.job_callback_wait``) is a job created again (logged as a warning, counted in
  ``stats.jobs_recreated``).
* A FAILED job sends the batch back to ``rendered`` (new upload, new job) up to
  ``MAX_JOB_ATTEMPTS`` times, then fails the batch, which releases its rows: they go round again
  in a later batch of the run (a run gives up after ``MAX_FAILED_BATCHES`` failed batches).
* Rows Zoho skipped are recorded with every code and field the result names; what happens next
  is the code's class (``pipeline.zoho.codes``): a permanent code holds the row back at once
  until it changes, a transient one sends it round again.
* Each claim is priced by the planner (:func:`choose_claim`): while a bulk job of the run's
  batch size is the cheaper way to send what is free, the claim is a bulk batch; otherwise
  (the retry rounds: rows Zoho skipped, rows edited in flight, a small tail) the ``upsert``
  step sends the free rows by Upsert calls of 100 with ``pipeline.upserts.send_batch``
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

The package, by responsibility (this module only gathers its public names):

``decisions``  steps, outcomes, limits and back-off: pure, no I/O
``runs``       starting a run (one at a time, with its credit forecast) and its progress
``batch``      the state check every step shares: lock, load, compare-and-set, failures
``claiming``   the run's steps: price the next claim, then ``extract`` or ``upsert``
``sending``    ``render``, ``upload``, ``create_job`` (never a blind second job)
``results``    ``poll`` and ``reconcile``
``callbacks``  callback tokens and the job id a callback names
``sweeper``    batches and runs that stopped moving
"""

from __future__ import annotations

from pipeline.initial_sync.batch import (
    batch_lock,
    fail_run_if_hopeless,
    result_path,
)
from pipeline.initial_sync.callbacks import (
    batch_by_token,
    callback_path,
    fresh_token,
    record_job_hint,
    token_digest,
    token_of,
)
from pipeline.initial_sync.claiming import (
    extract,
    price_claim,
    upsert,
)
from pipeline.initial_sync.decisions import (
    BATCH_LOCK_TIMEOUT,
    BULK_STEPS,
    CALLBACK_PREFIX,
    CALLBACK_RECHECK,
    CALLBACK_WAIT_FLOOR,
    FIRST_POLL,
    FREE_COUNT_CAP,
    MAX_FAILED_BATCHES,
    MAX_JOB_ATTEMPTS,
    MAX_POLL,
    MAX_STEP_ERRORS,
    MAX_UPSERT_CALLS,
    NEXT_STEP,
    RUN_STEPS,
    STEP_RETRY_COUNTDOWN,
    Outcome,
    RunInProgress,
    Step,
    callback_wait,
    job_remaining,
    job_slot_countdown,
    poll_countdown,
    run_is_done,
    step_retry_countdown,
    window_has_room,
)
from pipeline.initial_sync.results import (
    poll,
    reconcile,
    result_row_error,
)
from pipeline.initial_sync.runs import (
    run_progress,
    start_initial_run,
)
from pipeline.initial_sync.sending import (
    create_job,
    render,
    upload,
    zip_is_intact,
)
from pipeline.initial_sync.sweeper import (
    Resume,
    expect_next,
    resume_released,
    runs_of_batches,
    stalled_batches,
    stalled_runs,
    sweep_thresholds,
)
from pipeline.ledger import BATCH_LOCK_CLASS

__all__ = [
    "Resume",
    "expect_next",
    "resume_released",
    "runs_of_batches",
    "sweep_thresholds",
    "BATCH_LOCK_CLASS",
    "BATCH_LOCK_TIMEOUT",
    "BULK_STEPS",
    "CALLBACK_PREFIX",
    "CALLBACK_RECHECK",
    "CALLBACK_WAIT_FLOOR",
    "FIRST_POLL",
    "FREE_COUNT_CAP",
    "MAX_FAILED_BATCHES",
    "MAX_JOB_ATTEMPTS",
    "MAX_POLL",
    "MAX_STEP_ERRORS",
    "MAX_UPSERT_CALLS",
    "NEXT_STEP",
    "Outcome",
    "RUN_STEPS",
    "RunInProgress",
    "STEP_RETRY_COUNTDOWN",
    "Step",
    "batch_by_token",
    "callback_path",
    "fresh_token",
    "batch_lock",
    "create_job",
    "extract",
    "fail_run_if_hopeless",
    "poll",
    "job_remaining",
    "callback_wait",
    "job_slot_countdown",
    "poll_countdown",
    "price_claim",
    "reconcile",
    "record_job_hint",
    "render",
    "result_path",
    "result_row_error",
    "run_is_done",
    "run_progress",
    "stalled_batches",
    "stalled_runs",
    "start_initial_run",
    "step_retry_countdown",
    "token_digest",
    "token_of",
    "upload",
    "upsert",
    "window_has_room",
    "zip_is_intact",
]
