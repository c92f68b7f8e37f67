"""Pure decisions of the initial sync's state machine (no I/O)."""

from __future__ import annotations

import hashlib

import pytest

from pipeline.claims import choose_claim
from pipeline.initial_sync import (
    CALLBACK_WAIT_FLOOR,
    MAX_POLL,
    NEXT_STEP,
    RUN_STEPS,
    RunInProgress,
    Step,
    callback_path,
    callback_wait,
    fresh_token,
    job_remaining,
    job_slot_countdown,
    poll_countdown,
    result_row_error,
    run_is_done,
    step_retry_countdown,
    token_digest,
    token_of,
    window_has_room,
)
from pipeline.ledger import BatchKind, BatchState
from pipeline.zoho import codes
from pipeline.zoho.results import ResultRow, RowStatus, parse_error_cell


def test_poll_countdown_doubles_and_is_capped() -> None:
    waits = [poll_countdown(n) for n in range(12)]
    assert waits[:4] == [0.25, 0.5, 1.0, 2.0]
    assert all(b >= a for a, b in zip(waits, waits[1:], strict=False))
    assert max(waits) == MAX_POLL == 60.0


def test_a_poll_is_never_more_than_a_tenth_of_the_jobs_age_late() -> None:
    assert poll_countdown(3, age=0.0) == 0.25  # a fresh job: soon
    assert poll_countdown(3, age=60.0) == 6.0  # a minute-long job: its end seen within 6 s
    assert poll_countdown(3, age=3_600.0) == MAX_POLL  # an hour: once a minute
    # replay a job that ends at 61 s: the poll that sees it comes at most 10 % of 61 s late
    age = 0.0
    while age < 61.0:
        age += poll_countdown(0, age)
    assert age - 61.0 <= 0.1 * 61.0 + 0.25


def test_every_unfinished_state_has_its_step_and_finished_ones_none() -> None:
    assert set(NEXT_STEP) == {s for s in BatchState if not s.finished}
    assert NEXT_STEP[BatchState.UPLOADED] is Step.CREATE_JOB
    assert Step.EXTRACT not in NEXT_STEP.values()  # a run's claim, not a batch's step


@pytest.mark.parametrize(
    ("open_batches", "in_flight", "room"), [(0, 3, True), (2, 3, True), (3, 3, False)]
)
def test_window(open_batches: int, in_flight: int, room: bool) -> None:
    assert window_has_room(open_batches, in_flight) is room


def test_a_run_is_done_only_when_nothing_was_claimed_and_nothing_is_open() -> None:
    assert run_is_done(0, claimed=False)
    assert not run_is_done(1, claimed=False)
    assert not run_is_done(0, claimed=True)


@pytest.mark.parametrize(
    ("free", "batch_size", "kind", "rows"),
    [
        (1_000_000, 25_000, BatchKind.BULK, 25_000),
        (60_000, 20_000, BatchKind.BULK, 20_000),
        (20_000, 20_000, BatchKind.BULK, 20_000),
        (5_500, 25_000, BatchKind.BULK, 5_500),  # 500 credits against 550 by upsert
        (5_000, 5_000, BatchKind.BULK, 5_000),  # a tie: fewer calls
        (4_990, 25_000, BatchKind.REALTIME, 4_990),  # 499 credits by upsert
        (300, 25_000, BatchKind.REALTIME, 300),  # a tail
        (12, 25_000, BatchKind.REALTIME, 12),  # a retry round: 2 credits, not 500
        (3_000, 1_000, BatchKind.REALTIME, 3_000),  # 300 credits, not 3 jobs of 1,000
        (60_000, 1_000, BatchKind.REALTIME, 60_000),  # jobs of 1,000 rows never pay
    ],
)
def test_each_claim_is_priced_by_the_planner(
    free: int, batch_size: int, kind: BatchKind, rows: int
) -> None:
    choice = choose_claim(free, batch_size)
    assert choice is not None
    assert (choice.kind, choice.rows) == (kind, rows)
    assert choice.plan.rows == free


def test_claim_by_claim_reaches_the_planners_mix() -> None:
    # 26,000 rows: one bulk job of 25,000, then 1,000 rows by ten upsert calls (600 credits)
    first = choose_claim(26_000, 25_000)
    assert first is not None and (first.kind, first.rows) == (BatchKind.BULK, 25_000)
    assert first.plan.credits == 600
    rest = choose_claim(26_000 - first.rows, 25_000)
    assert rest is not None and (rest.kind, rest.rows) == (BatchKind.REALTIME, 1_000)
    assert choose_claim(0, 25_000) is None


def test_a_step_that_hit_a_fatal_error_runs_again_sooner_than_the_sweeper() -> None:
    assert [step_retry_countdown(n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert {Step.EXTRACT, Step.UPSERT} == RUN_STEPS


def test_transient_codes_go_round_again_and_bad_data_is_held_at_once() -> None:
    assert codes.is_transient("LIMIT_EXCEEDED") and codes.is_transient("record_locked")
    assert not codes.is_transient("INVALID_DATA")
    assert codes.attempts_allowed("INVALID_DATA", 3) == 1
    assert codes.attempts_allowed("mandatory_not_found", 3) == 1
    assert codes.attempts_allowed(codes.VALIDATION_CODE, 3) == 1
    assert codes.attempts_allowed("LIMIT_EXCEEDED", 3) == 3 * codes.TRANSIENT_FACTOR
    assert codes.classify("SOMETHING_NEW") is codes.RowCodeClass.UNKNOWN
    assert codes.attempts_allowed("SOMETHING_NEW", 3) == 3


def test_a_bulk_result_line_with_two_faults_names_both() -> None:
    row = ResultRow(
        line=1, key="P-1", status=RowStatus.SKIPPED, record_id=None,
        errors=parse_error_cell("MANDATORY_NOT_FOUND-Company,Last_Name:INVALID_DATA-Email"),
    )  # fmt: skip
    error = result_row_error(row)
    assert (error.code, error.field) == ("MANDATORY_NOT_FOUND", "Company,Last_Name")
    assert error.message == (
        "bulk result: MANDATORY_NOT_FOUND on Company, Last_Name; INVALID_DATA on Email"
    )
    bare = result_row_error(ResultRow(2, "P-2", RowStatus.UNPROCESSED, None))
    assert bare.code == "UNPROCESSED" and codes.is_transient(bare.code)


def test_the_token_of_a_callback_url_and_its_digest() -> None:
    token = fresh_token()
    assert len(token) >= 43 and token != fresh_token()
    url = "https://sync.example.com/base" + callback_path(token)
    assert token_of(url) == token
    assert token_digest(token) == hashlib.sha256(token.encode()).hexdigest()
    assert token_of("https://elsewhere.example.com/hook") is None
    assert token_of(None) is None


def test_run_in_progress_survives_pickling() -> None:
    import pickle

    err = pickle.loads(pickle.dumps(RunInProgress(7, {"state": "running"})))
    assert err.run_id == 7 and err.summary == {"state": "running"}
    assert "7" in str(err)


def test_steps_are_routed_by_what_they_touch_and_the_sweeper_is_on_beat_with_expires() -> None:
    from tasks.config import ROUTES, TASK_MODULES, CeleryOptions, Queue, celery_config

    assert "tasks.initial" in TASK_MODULES
    for step in (Step.EXTRACT, Step.RENDER):
        assert ROUTES[f"ordersync.{step.value}"] is Queue.DB
    for step in (Step.UPLOAD, Step.CREATE_JOB, Step.POLL, Step.RECONCILE, Step.UPSERT):
        assert ROUTES[f"ordersync.{step.value}"] is Queue.ZOHO
    entry = celery_config("redis://127.0.0.1:6379/0", CeleryOptions())["beat_schedule"][
        "ordersync.sweep"
    ]
    assert entry["task"] == "ordersync.sweep"
    assert 0 < entry["options"]["expires"] <= 60


def test_a_claim_is_priced_on_the_rows_it_takes() -> None:
    # 6,000 rows ahead of the open batches: a bulk batch of them, forward
    ahead = choose_claim(30_000, 25_000, ahead=6_000, after="500")
    assert ahead is not None and (ahead.kind, ahead.rows, ahead.after) == (
        BatchKind.BULK,
        6_000,
        "500",
    )
    # 2,700 ahead would cost 500 for 270 credits of upserts: the claim starts at the first free
    # key instead, where 25,000 rows (24,300 freed behind the open batches) make the job pay
    behind = choose_claim(27_000, 25_000, ahead=2_700, after="500")
    assert behind is not None and (behind.kind, behind.rows, behind.after) == (
        BatchKind.BULK,
        25_000,
        None,
    )
    # all that is free is below the break-even: upserts, never a job for 2,700 rows
    tail = choose_claim(2_700, 25_000, ahead=2_700, after="500")
    assert tail is not None and tail.kind is BatchKind.REALTIME and tail.rows == 2_700
    # the break-even: from 4,991 rows upserts cost 500 credits too (a job: 1 call, not 50);
    # 4,990 rows cost 499 by upsert
    assert choose_claim(4_991, 25_000).kind is BatchKind.BULK  # type: ignore[union-attr]
    assert choose_claim(4_990, 25_000).kind is BatchKind.REALTIME  # type: ignore[union-attr]


def test_a_job_refused_with_429_waits_longer_each_time_up_to_a_minute() -> None:
    waits = [job_slot_countdown(n) for n in range(1, 12)]
    assert waits[0] == 5.0
    assert all(a < b for a, b in zip(waits, waits[1:6], strict=False)), waits
    assert max(waits) == 60.0 and waits[-1] == 60.0
    assert job_slot_countdown(1, retry_after=120.0) == 120.0  # Zoho's own wait wins when longer


def test_a_job_of_unknown_outcome_waits_for_its_callback_only_as_long_as_it_could_take() -> None:
    speed = 25_000 / 60  # rows a second, as jobs went so far
    # a full batch: 60 s of job, x2 + 10 s; no more than the configured ceiling
    assert callback_wait(25_000, speed, ceiling=300.0) == pytest.approx(130.0)
    assert callback_wait(25_000, speed, ceiling=90.0) == 90.0
    # a small batch, or fast jobs: the floor (a queue at Zoho, a slow callback)
    assert callback_wait(5_000, speed * 10, ceiling=300.0) == CALLBACK_WAIT_FLOOR == 30.0
    # slow jobs seen so far: longer, still capped
    assert callback_wait(25_000, speed / 2, ceiling=300.0) == pytest.approx(250.0)
    assert callback_wait(25_000, speed / 10, ceiling=300.0) == 300.0
    # no speed known: the ceiling; no wait configured (no callback URL): none
    assert callback_wait(25_000, 0.0, ceiling=300.0) == 300.0
    assert callback_wait(25_000, speed, ceiling=0.0) == 0.0


def test_a_poll_comes_just_after_the_end_zohos_counts_predict() -> None:
    # a 60 s job, 10 s old: a tenth of its age is 1 s; 40 s old with 2/3 done at the rate
    # since the last poll: the end is 20 s away, and the 10 % rule (4 s) comes first
    assert poll_countdown(3, 10.0) == 1.0
    remaining = job_remaining(25_000, 16_667, 40.0, before=(12_500, 30.0))
    assert remaining is not None and 19.9 < remaining < 20.1
    assert poll_countdown(4, 40.0, remaining) == 4.0
    # 58 s old, 24,600 done at ~416 rows/s: ~1 s left → polled 0.25 s after, not in 5.8 s
    near = job_remaining(25_000, 24_600, 58.0, before=(20_433, 48.0))
    assert near is not None and 0.9 < near < 1.1
    assert 1.1 < poll_countdown(5, 58.0, near) < 1.4
    # no counts yet, or none since the last poll: the 10 % rule alone
    assert job_remaining(25_000, 0, 5.0) is None and job_remaining(None, 10, 5.0) is None
    # without a previous poll the rate includes the queueing: slower, so a later estimate
    slow = job_remaining(25_000, 5_000, 14.0)
    assert slow is not None and slow > 40.0
