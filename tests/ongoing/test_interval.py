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
    # what it said it would spend is what zohosim charged: the plan plus the field check
    assert result.check_credits == 1 and result.credits_planned == 16
    assert ongoing.sim.admin.credits()["used_24h"] == result.credits_planned
    ((state, stats),) = ongoing.query("SELECT state, stats FROM ordersync.runs")
    assert state == "done"
    assert stats["plan"]["upsert_calls"] == 2 and stats["upsert_sizes"] == [100, 50]
    assert stats["check_credits"] == 1
    assert "waiting" not in stats
    # an hour has not passed: the next run's check reads the cached fields and says 0
    ongoing.change(range(1, 11))
    again = interval.run_interval(ongoing.settings, ongoing.client)
    assert again.check_credits == 0 and again.credits_planned == 1
    assert ongoing.sim.admin.credits()["used_24h"] == 17


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
    # 16 credits left, 1 of them for the module's fields (the run checks the mapping first):
    # 150 rows by upsert (100 + 50), 50 wait
    assert ongoing.sim.admin.credits()["by_api"]["fields"] == 1
    assert (result.plan.rows, result.plan.waiting_rows) == (150, 50)
    assert [b.sent for b in result.upserts] == [100, 50]
    assert ongoing.pending() == 50
    conn = connect(settings)
    try:
        waiting = realtime.waiting(conn, settings)
    finally:
        conn.close()
    assert waiting is not None and waiting["kind"] == "interval"
    assert waiting["rows"] == result.plan.waiting_rows
    assert waiting["reason"].startswith("credit budget")


def test_an_interval_run_does_not_start_on_a_mapping_zoho_disagrees_with(
    ongoing: Ongoing,
) -> None:
    wrong = replace(
        ongoing.settings.mapping,
        fields=tuple(
            replace(s, api_name="E_mail") if s.api_name == "Email" else s
            for s in ongoing.settings.mapping.fields
        ),
    )
    settings = replace(ongoing.settings, mapping=wrong)
    client = ZohoClient.from_settings(settings)
    try:
        ongoing.change(range(1, 21))
        result = interval.run_interval(settings, client)
    finally:
        client.close()
    assert result.run_id is None and result.upserts == ()
    assert "has no field 'E_mail'" in result.waiting_reason
    assert ongoing.pending() == 20  # nothing sent, nothing lost
    assert ongoing.sim.admin.credits()["by_api"] == {"fields": 1}
