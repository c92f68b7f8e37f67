"""The initial sync's vocabulary and pure decisions: steps, outcomes, limits, back-off (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pipeline.ledger import BatchState
from pipeline.zoho.limits import BULK_JOB_MAX_ROWS

CALLBACK_PREFIX = "/zoho/callback/"  # the web process's route (cli.web.CALLBACK_PREFIX)
FIRST_POLL = 0.25  # seconds before the first poll of a job; doubled each poll
MAX_POLL = 60.0  # seconds: the longest wait between two polls
POLL_LATE_SHARE = 0.1  # a poll comes at most this share of the job's age after its end
CALLBACK_RECHECK = 30.0  # seconds between checks while waiting for a job's callback
# A job creation of unknown outcome waits for the job's callback only as long as such a job
# could take: its rows at the job speed seen so far, times this factor, plus the margin, and at
# least the floor (a queue at Zoho, a slow callback); ``job_callback_wait`` caps it.
CALLBACK_WAIT_FACTOR = 2.0
CALLBACK_WAIT_MARGIN = 10.0  # seconds
CALLBACK_WAIT_FLOOR = 30.0  # seconds
MAX_JOB_ATTEMPTS = 3  # jobs per batch (FAILED or refused) before the batch fails
MAX_FAILED_BATCHES = 5  # failed batches before a run gives up
BATCH_LOCK_TIMEOUT = "120s"
MAX_STEP_ERRORS = 3  # fatal errors of one step (poll, reconcile) before the batch fails
STEP_RETRY_COUNTDOWN = 1.0  # seconds before a step that hit a fatal error runs again; doubled
# Batches a run claims, renders and uploads beyond its ``batches_in_flight`` jobs, so a job
# slot that frees takes the next job at once (only its create-job is left to do).
PREPARED_AHEAD = 1
JOB_SLOT_RECHECK = 10.0  # seconds: a batch waiting for one of its run's jobs to end looks again
MAX_UPSERT_CALLS = 100  # upsert calls one ``upsert`` step makes at most (then the next claim)
# Free rows counted at most per claim: above this a bulk job is always the cheaper way.
FREE_COUNT_CAP = BULK_JOB_MAX_ROWS + 1


def callback_wait(rows: int, rows_per_s: float, ceiling: float) -> float:
    """Seconds to wait for the callback of a job whose creation has an unknown outcome (the
    answer was lost) before creating it again.

    Zoho has no API that lists recent bulk write jobs (only one job by its id), so a lost answer
    can only be resolved by the job's callback, which comes when the job ends: waiting longer
    than the job could need only delays the batch. The wait is ``rows`` at ``rows_per_s``
    (``CALLBACK_WAIT_FACTOR`` times, plus ``CALLBACK_WAIT_MARGIN``), at least
    ``CALLBACK_WAIT_FLOOR``, at most ``ceiling`` (``job_callback_wait``).
    """
    if ceiling <= 0:
        return 0.0
    if rows_per_s <= 0:
        return ceiling
    need = CALLBACK_WAIT_FACTOR * rows / rows_per_s + CALLBACK_WAIT_MARGIN
    return min(ceiling, max(CALLBACK_WAIT_FLOOR, need))


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
    ``wake``: a batch of the run waiting for a job slot, whose create-job can go now (a job
    just ended). None: nothing to send (done, or someone else carries on).
    """

    batch_id: int | None
    next_step: Step | None
    run_id: int | None = None
    countdown: float = 0.0
    more: bool = False
    note: str = ""
    wake: int | None = None


def poll_countdown(polls: int, age: float | None = None, remaining: float | None = None) -> float:
    """Seconds before the next poll of a job that is ``age`` seconds old.

    ``POLL_LATE_SHARE`` (10 %) of its age, between 0.25 s and 60 s: the poll never sees a job's
    end more than a tenth of its age late (a 1-minute job: within 6 s; doubling waits would
    have been up to 100 % late), and a job of an hour is asked once a minute. Sooner when
    Zoho's counts say the job ends before that (``remaining``, :func:`job_remaining`): then
    0.25 s after the predicted end. Without an age: 0.25, 0.5, 1, 2, … capped at 60 (poll
    number ``polls + 1``).
    """
    if age is None:
        return min(MAX_POLL, FIRST_POLL * 2 ** max(0, polls))
    wait = min(MAX_POLL, max(FIRST_POLL, POLL_LATE_SHARE * max(0.0, age)))
    if remaining is not None:
        wait = max(FIRST_POLL, min(wait, remaining + FIRST_POLL))
    return wait


def job_remaining(
    total: int | None,
    processed: int | None,
    age: float | None,
    before: tuple[int, float] | None = None,
) -> float | None:
    """Seconds until a running job ends, from Zoho's counts: ``processed`` of ``total`` rows at
    ``age`` seconds, at the rate since the previous poll (``before``: its processed rows and
    age) or, without one, since the job was created (slower: it includes the job's queueing).
    None when the counts say nothing yet.
    """
    if not total or processed is None or age is None or processed <= 0:
        return None
    rate = processed / age if age > 0 else 0.0
    if before is not None and age > before[1] and processed > before[0]:
        rate = (processed - before[0]) / (age - before[1])
    if rate <= 0:
        return None
    return max(0.0, (total - processed) / rate)


JOB_SLOT_WAIT_FIRST = 5.0  # seconds before asking again when Zoho refused a job with 429
JOB_SLOT_WAIT_MAX = 60.0


def job_slot_countdown(waits: int, retry_after: float | None = None) -> float:
    """Seconds before a create-job that Zoho refused with 429 (its limit on running jobs, which
    it does not document, or on credits) asks again: 5, 7.5, 11, … up to 60 s, or Zoho's own
    ``retry_after`` when longer. Not a failure: the batch waits for a slot, never gives up.
    """
    wait = min(JOB_SLOT_WAIT_MAX, JOB_SLOT_WAIT_FIRST * 1.5 ** max(0, waits - 1))
    return max(wait, float(retry_after or 0.0))


def window_has_room(open_batches: int, batches_in_flight: int) -> bool:
    """May the run claim another batch now?"""
    return open_batches < batches_in_flight


def run_is_done(open_batches: int, claimed: bool) -> bool:
    """A run is done when nothing could be claimed and none of its batches is unfinished."""
    return not claimed and open_batches == 0


def step_retry_countdown(errors: int) -> float:
    """Seconds before a step runs again after its ``errors``-th fatal error: 1, 2, 4, …"""
    return STEP_RETRY_COUNTDOWN * 2 ** max(0, errors - 1)
