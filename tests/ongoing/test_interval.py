"""Interval runs against PostgreSQL and zohosim (the pipeline called directly)."""

from __future__ import annotations

from dataclasses import replace

from pipeline import interval, realtime
from pipeline.legacy.connection import connect
from pipeline.zoho.client import ZohoClient
from tests.ongoing.conftest import Ongoing


def test_nothing_pending_records_no_run(ongoing: Ongoing) -> None:
    result = interval.run_interval(ongoing.settings, ongoing.client)
    assert result.run_id is None and result.pending == 0
    assert ongoing.query("SELECT count(*) FROM ordersync.runs") == [(0,)]
    assert ongoing.sim.admin.credits()["used_24h"] == 0


def test_a_small_backlog_goes_by_upsert_and_the_run_records_its_plan(ongoing: Ongoing) -> None:
    ongoing.change(range(1, 151))
    result = interval.run_interval(ongoing.settings, ongoing.client)
    assert [b.sent for b in result.upserts] == [100, 50]
    assert result.bulk_batches == () and not result.run_open
    assert ongoing.pending() == 0 and ongoing.sim_upsert_credits() == 15
    ((state, stats),) = ongoing.query("SELECT state, stats FROM ordersync.runs")
    assert state == "done"
    assert stats["plan"]["upsert_calls"] == 2 and stats["upsert_sizes"] == [100, 50]
    assert "waiting" not in stats


def test_what_the_budget_cannot_pay_waits_and_status_can_say_why(ongoing: Ongoing) -> None:
    settings = replace(
        ongoing.settings,
        zoho=replace(ongoing.settings.zoho, daily_credit_budget=1_016, credit_reserve=1_000),
    )
    client = ZohoClient.from_settings(settings)
    try:
        ongoing.change(range(1, 201))
        result = interval.run_interval(settings, client)
    finally:
        client.close()
    # 16 credits left: 160 rows by upsert (100 + 60), 40 wait
    assert (result.plan.rows, result.plan.waiting_rows) == (160, 40)
    assert [b.sent for b in result.upserts] == [100, 60]
    assert ongoing.pending() == 40
    conn = connect(settings)
    try:
        waiting = realtime.waiting(conn, settings)
    finally:
        conn.close()
    assert waiting is not None and waiting["kind"] == "interval"
    assert waiting["rows"] == result.plan.waiting_rows
    assert waiting["reason"].startswith("credit budget")
