"""Near-real-time flushes against PostgreSQL and zohosim (the pipeline called directly)."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest

from pipeline import interval, ledger, realtime
from pipeline.initial_sync import start_initial_run
from pipeline.ledger import RunState
from pipeline.legacy.connection import connect
from pipeline.realtime import PendingState, Reason
from pipeline.settings import Settings, SyncMode
from pipeline.zoho.client import ZohoClient
from pipeline.zoho.codes import VALIDATION_CODE
from pipeline.zoho.errors import RateLimited
from tests.ongoing.conftest import MAX_DELAY, Ongoing


def _wait_past_max_delay(ongoing: Ongoing) -> None:
    """Sleep until the oldest ready change is max_delay old (by the database clock)."""
    conn = connect(ongoing.settings)
    try:
        state = realtime.pending_state(conn, ongoing.settings)
    finally:
        conn.close()
    assert state.oldest_age is not None
    time.sleep(max(0.0, MAX_DELAY - state.oldest_age) + 0.05)


# -- the decision, pure ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ready", "age", "flush", "reason"),
    [
        (0, None, False, Reason.NOTHING),
        (9, 569.0, False, Reason.NOT_YET),  # fewer than ten: wait for company or the deadline
        (99, 569.0, True, Reason.TENS),
        (100, 0.0, True, Reason.THRESHOLD),
        (1, 570.0, True, Reason.MAX_DELAY),  # the next check (30 s) would be past 600 s
        (1, 600.0, True, Reason.MAX_DELAY),
        (4_999, 1.0, True, Reason.THRESHOLD),
    ],
)
def test_decide(ready: int, age: float | None, flush: bool, reason: Reason) -> None:
    settings = Settings(mode=SyncMode.REALTIME)
    due = realtime.decide(PendingState(ready, age, ready), settings)
    assert (due.flush, due.reason) == (flush, reason)


@pytest.mark.parametrize(
    ("ready", "age", "min_batch", "limit", "reason"),
    [
        (99, 1.0, 10, 90, Reason.TENS),  # whole tens now; the 9 left wait
        (25, 1.0, 10, 20, Reason.TENS),
        (10, 1.0, 10, 10, Reason.TENS),
        (25, 1.0, 30, None, Reason.NOT_YET),  # min_batch 30: not yet
        (99, 1.0, 100, None, Reason.NOT_YET),  # min_batch 100: only full batches (older scheme)
        (7, 1.0, 1, 7, Reason.TENS),  # min_batch below ten: every ready row, now
        (25, 590.0, 10, 100, Reason.MAX_DELAY),  # the deadline: everything, partial tens too
    ],
)
def test_decide_sends_whole_tens_at_once(
    ready: int, age: float, min_batch: int, limit: int | None, reason: Reason
) -> None:
    settings = Settings(mode=SyncMode.REALTIME, realtime_min_batch=min_batch)
    due = realtime.decide(PendingState(ready, age, ready), settings)
    assert due.reason is reason
    assert due.flush is (limit is not None)
    if limit is not None:
        assert due.limit == limit


def test_decide_leaves_a_backlog_cheaper_by_bulk_to_the_interval_run_in_mode_both() -> None:
    both, only = Settings(mode=SyncMode.BOTH), Settings(mode=SyncMode.REALTIME)
    backlog = PendingState(6_000, 900.0, 6_000)
    assert realtime.decide(backlog, both).reason is Reason.BACKLOG
    assert not realtime.decide(backlog, both).flush
    assert realtime.decide(backlog, only).flush  # realtime only: upserts, whatever the cost
    assert realtime.decide(PendingState(4_000, 900.0, 4_000), both).flush


def test_a_check_woken_by_a_change_notification_sends_every_ready_row_now() -> None:
    settings = Settings(mode=SyncMode.REALTIME)
    for ready in (1, 9, 25):
        due = realtime.decide(PendingState(ready, 0.1, ready), settings, woken=True)
        assert (due.flush, due.reason, due.limit) == (True, Reason.WOKEN, 100)
    assert realtime.decide(PendingState(150, 0.1, 150), settings, woken=True).reason is (
        Reason.THRESHOLD
    )
    assert not realtime.decide(PendingState(0, None, 0), settings, woken=True).flush
    # still no flush during an initial sync, and a bulk-sized backlog still goes by bulk
    busy = PendingState(3, 0.1, 3, initial_running=True)
    assert realtime.decide(busy, settings, woken=True).reason is Reason.INITIAL_RUN
    backlog = PendingState(6_000, 0.1, 6_000)
    assert realtime.decide(backlog, Settings(), woken=True).reason is Reason.BACKLOG


def test_decide_stands_by_while_an_initial_sync_runs() -> None:
    state = PendingState(6_000, 900.0, 6_000, initial_running=True)
    for mode in SyncMode:
        due = realtime.decide(state, Settings(mode=mode))
        assert (due.flush, due.reason) == (False, Reason.INITIAL_RUN)


def test_no_flush_and_no_interval_plan_while_an_initial_sync_runs(ongoing: Ongoing) -> None:
    ongoing.change(range(1, 151))
    run_id = start_initial_run(ongoing.settings)
    flushed = realtime.flush(ongoing.settings, ongoing.client)
    assert flushed.batches == () and flushed.decision.reason is Reason.INITIAL_RUN
    planned = interval.run_interval(ongoing.settings, ongoing.client)
    assert planned.run_id is None and planned.bulk_batches == () and planned.upserts == ()
    assert ongoing.pending() == 150  # nothing claimed, nothing sent: the initial run owns them

    conn = connect(ongoing.settings)
    try:
        with conn:
            ledger.finish_run(conn, ongoing.settings, run_id, RunState.DONE)
    finally:
        conn.close()
    assert [b.sent for b in realtime.flush(ongoing.settings, ongoing.client).batches] == [100, 50]


# -- flushes against zohosim ----------------------------------------------------------------------


def test_255_changes_go_as_100_100_50_then_5_after_max_delay(ongoing: Ongoing) -> None:
    ongoing.change(range(1, 201))
    ongoing.seed(55, seed=3)  # inserts: ids 201..255
    assert ongoing.pending() == 255

    first = realtime.flush(ongoing.settings, ongoing.client)
    assert [b.sent for b in first.batches] == [100, 100, 50]  # whole tens go at once
    assert first.decision.reason is Reason.NOT_YET and first.decision.ready == 5
    assert ongoing.pending() == 5

    assert realtime.flush(ongoing.settings, ongoing.client).batches == ()  # not yet

    _wait_past_max_delay(ongoing)
    last = realtime.flush(ongoing.settings, ongoing.client)
    assert [b.sent for b in last.batches] == [5]
    assert last.batches[0].marked == 5

    assert ongoing.upsert_sizes() == [100, 100, 50, 5]
    assert ongoing.sim_upsert_credits() == 26  # 10 + 10 + 5 + 1: what 100, 100, 55 would cost
    assert ongoing.sim.admin.credits()["calls_by_api"]["upsert"] == 4
    assert ongoing.pending() == 0
    records = ongoing.sim_records()
    assert len(records) == 255
    zoho_ids = dict(ongoing.query("SELECT id::text, zoho_id FROM orders WHERE id <= 255"))
    assert all(zoho_ids[key] == rec["id"] for key, rec in records.items())


def test_a_row_changed_five_times_is_sent_once_with_its_last_value(ongoing: Ongoing) -> None:
    version = ongoing.query("SELECT sync_version FROM orders WHERE id = 7")[0][0]
    for status in ("New", "Paid", "Shipped", "Cancelled", "Refunded"):
        ongoing.query("UPDATE orders SET status = %s WHERE id = 7", (status,))
    assert ongoing.query("SELECT sync_version FROM orders WHERE id = 7")[0][0] == version + 5
    assert ongoing.pending() == 1
    _wait_past_max_delay(ongoing)
    result = realtime.flush(ongoing.settings, ongoing.client)
    assert [b.sent for b in result.batches] == [1]
    assert ongoing.sim_upsert_credits() == 1
    assert ongoing.sim_records()["7"]["Order_Status"] == "Refunded"


def test_updates_of_unmapped_columns_only_cost_nothing(ongoing: Ongoing) -> None:
    ongoing.query(
        "UPDATE orders SET warehouse_note = 'bin 7', internal_flags = internal_flags + 1,"
        " updated_at = now()"
    )
    assert ongoing.pending() == 0
    time.sleep(0.2)
    result = realtime.flush(ongoing.settings, ongoing.client)
    assert result.run_id is None and result.batches == ()
    assert result.decision.reason is Reason.NOTHING
    assert ongoing.sim.admin.credits()["used_24h"] == 0


def test_mixed_valid_and_invalid_records(ongoing: Ongoing) -> None:
    ongoing.change(range(1, 8))
    ongoing.query("UPDATE orders SET customer_email = 'not-an-email@@x' WHERE id = 8")
    ongoing.query("UPDATE orders SET status = 'Lost in transit' WHERE id = 9")
    ongoing.query("UPDATE orders SET customer_name = repeat('Verylongname ', 10) WHERE id = 10")
    _wait_past_max_delay(ongoing)

    result = realtime.flush(ongoing.settings, ongoing.client)
    (batch,) = result.batches
    # the three break a field rule: held back before the call, never sent (0 credits)
    assert (batch.sent, batch.ok, batch.refused, batch.marked) == (7, 7, 0, 7)
    assert batch.credits == ongoing.sim_upsert_credits() == 1
    assert sorted(ongoing.sim_records()) == [str(i) for i in range(1, 8)]
    errors = {
        key: (code, field)
        for key, code, field, message in ongoing.query(
            "SELECT row_key, code, field, message FROM ordersync.row_errors"
        )
        if message
    }
    assert errors == {
        "8": (VALIDATION_CODE, "Email"),
        "9": (VALIDATION_CODE, "Order_Status"),
        "10": (VALIDATION_CODE, "Customer_Name"),
    }
    left = ongoing.query("SELECT id FROM orders WHERE NOT synced ORDER BY id")
    assert left == [(8,), (9,), (10,)]
    # held rows do not force another flush
    again = realtime.flush(ongoing.settings, ongoing.client)
    assert again.batches == () and again.decision.reason is Reason.NOTHING
    # fixed in the legacy app: goes in the next flush
    ongoing.query("UPDATE orders SET customer_email = 'fixed@example.com' WHERE id = 8")
    time.sleep(MAX_DELAY + 0.1)
    fixed = realtime.flush(ongoing.settings, ongoing.client)
    assert sum(b.ok for b in fixed.batches) == 1
    assert "8" in ongoing.sim_records()


def test_a_429_during_a_flush_loses_nothing_and_counts_nothing_twice(ongoing: Ongoing) -> None:
    ongoing.change(range(1, 156))
    ongoing.sim.admin.fault("upsert", "429", count=1)
    first = realtime.flush(ongoing.settings, ongoing.client)  # the client's retry absorbs it
    assert [b.sent for b in first.batches] == [100, 50]  # whole tens; 5 wait

    # Zoho keeps refusing past the client's retries: the batch fails, its rows stay pending.
    _wait_past_max_delay(ongoing)
    ongoing.sim.admin.fault("upsert", "429", count=ongoing.settings.zoho.max_retries + 1)
    with pytest.raises(RateLimited):
        realtime.flush(ongoing.settings, ongoing.client)
    assert ongoing.pending() == 5
    failed = ongoing.query("SELECT state, cardinality(keys) FROM ordersync.batches ORDER BY id")
    assert failed[-1] == ("failed", 5)

    again = realtime.flush(ongoing.settings, ongoing.client)  # overdue already: sent at once
    assert [b.sent for b in again.batches] == [5]
    assert ongoing.pending() == 0
    assert len(ongoing.sim_records()) == 155
    assert ongoing.sim_upsert_credits() == 16  # 429s are not charged …
    assert ongoing.client.credits.spent_24h() == 16  # … and our ledger released them
    calls = ongoing.sim.admin.requests()["requests"]
    statuses = [r["status"] for r in calls if r["api"] == "upsert"]
    assert statuses.count(429) == 1 + ongoing.settings.zoho.max_retries + 1


def test_a_row_changed_during_its_flush_stays_pending_and_goes_next_time(
    ongoing: Ongoing,
) -> None:
    ongoing.change(range(1, 101))
    ongoing.sim.admin.fault("upsert", "stall", count=1, seconds=1.0)
    editor = threading.Timer(
        0.4, ongoing.query, ("UPDATE orders SET amount = 4242.42 WHERE id = 50",)
    )
    editor.start()
    first = realtime.flush(ongoing.settings, ongoing.client)
    editor.join()
    (batch,) = first.batches
    assert (batch.sent, batch.ok, batch.marked, batch.stale) == (100, 100, 99, 1)
    assert ongoing.query("SELECT synced FROM orders WHERE id = 50") == [(False,)]
    assert ongoing.sim_records()["50"]["Amount"] != 4242.42

    # its change time is kept from before the flush: overdue by now, sent at the next check
    time.sleep(max(0.0, MAX_DELAY - 1.0))
    second = realtime.flush(ongoing.settings, ongoing.client)
    assert [b.sent for b in second.batches] == [1]
    assert ongoing.sim_records()["50"]["Amount"] == 4242.42
    assert ongoing.pending() == 0


def test_an_abandoned_batch_is_released_and_its_rows_sent_again(ongoing: Ongoing) -> None:
    from pipeline.legacy.extract import claim_realtime

    ongoing.change(range(1, 4))
    conn = connect(ongoing.settings)
    try:
        claimed = claim_realtime(conn, ongoing.settings)  # a worker claimed, then died
        assert claimed is not None
        assert realtime.pending_state(conn, ongoing.settings).ready == 0
        ongoing.query("UPDATE ordersync.batches SET updated_at = now() - interval '1 hour'")
        time.sleep(MAX_DELAY)
        result = realtime.flush(ongoing.settings, ongoing.client, conn=conn)
    finally:
        conn.close()
    assert result.released == (claimed.batch_id,)
    assert [b.sent for b in result.batches] == [3]


def test_the_credit_budget_makes_work_wait_with_a_reason(ongoing: Ongoing) -> None:
    settings = replace(
        ongoing.settings,
        zoho=replace(ongoing.settings.zoho, daily_credit_budget=1_015, credit_reserve=1_000),
    )
    client = ZohoClient.from_settings(settings)
    try:
        ongoing.change(range(1, 201))
        result = realtime.flush(settings, client)
        again = realtime.flush(settings, client)  # still no budget: nothing claimed, same run
    finally:
        client.close()
    assert [b.sent for b in result.batches] == [100]
    assert result.waiting_reason.startswith("credit budget")
    assert again.batches == () and again.run_id == result.run_id
    assert ongoing.pending() == 100
    assert ongoing.query("SELECT state, count(*) FROM ordersync.batches GROUP BY 1") == [
        ("reconciled", 1)
    ]
    assert ongoing.query("SELECT state FROM ordersync.runs") == [("done",)]
    conn = connect(settings)
    try:
        waiting = realtime.waiting(conn, settings)
    finally:
        conn.close()
    assert waiting is not None and waiting["rows"] == 100
    assert waiting["kind"] == "realtime" and "credit budget" in waiting["reason"]
