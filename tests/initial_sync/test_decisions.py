"""Pure decisions of the initial sync's state machine (no I/O)."""

from __future__ import annotations

import pytest

from pipeline.initial_sync import (
    MAX_POLL,
    NEXT_STEP,
    RunInProgress,
    Step,
    is_transient_row_code,
    poll_countdown,
    run_is_done,
    token_digest,
    token_of,
    window_has_room,
)
from pipeline.ledger import BatchState
from tasks.web import callback_path, callback_token_digest, new_callback_token


def test_poll_countdown_doubles_and_is_capped() -> None:
    waits = [poll_countdown(n) for n in range(12)]
    assert waits[:4] == [0.25, 0.5, 1.0, 2.0]
    assert all(b >= a for a, b in zip(waits, waits[1:], strict=False))
    assert max(waits) == MAX_POLL == 60.0


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


def test_transient_codes_go_round_again_and_bad_data_does_not() -> None:
    assert is_transient_row_code("LIMIT_EXCEEDED") and is_transient_row_code("record_locked")
    assert not is_transient_row_code("INVALID_DATA")
    assert not is_transient_row_code("MANDATORY_NOT_FOUND")


def test_the_token_of_a_callback_url_and_its_digest_match_the_web_process() -> None:
    token = new_callback_token()
    url = "https://sync.example.com/base" + callback_path(token)
    assert token_of(url) == token
    assert token_digest(token) == callback_token_digest(token)
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
    for step in (Step.UPLOAD, Step.CREATE_JOB, Step.POLL, Step.RECONCILE):
        assert ROUTES[f"ordersync.{step.value}"] is Queue.ZOHO
    entry = celery_config("redis://127.0.0.1:6379/0", CeleryOptions())["beat_schedule"][
        "ordersync.sweep"
    ]
    assert entry["task"] == "ordersync.sweep"
    assert 0 < entry["options"]["expires"] <= 60
