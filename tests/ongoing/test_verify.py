"""``ordersync verify`` against zohosim: plant each kind of difference, find exactly those."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import cli.commands.verify as cmd
from cli.main import main
from pipeline import realtime, verify
from pipeline.legacy.connection import connect
from pipeline.zoho.errors import CreditBudgetExceeded
from tests.ongoing.conftest import MAX_DELAY, Ongoing


def _flush_until_synced(ongoing: Ongoing) -> None:
    """Run the normal near-real-time sync until no row is pending."""
    for _ in range(5):
        # as seen after the near-real-time delay, so a handful of rows is due too
        later = datetime.now(UTC) + timedelta(seconds=MAX_DELAY + 1)
        realtime.flush(ongoing.settings, ongoing.client, now=later)
        if ongoing.pending() == 0:
            return
    raise AssertionError(f"{ongoing.pending()} rows still pending")


def _sync_everything(ongoing: Ongoing) -> None:
    """Send every legacy row to zohosim through the normal sync."""
    ongoing.query("UPDATE orders SET synced = false")
    _flush_until_synced(ongoing)


def _run(ongoing: Ongoing, **kwargs: Any) -> verify.Verification:
    conn = connect(ongoing.settings)
    try:
        return verify.run_to_end(conn, ongoing.settings, ongoing.client, poll=0.05,
                                 timeout=30, **kwargs)
    finally:
        conn.close()


def test_a_faithful_sync_verifies_clean_for_one_job(ongoing: Ongoing) -> None:
    _sync_everything(ongoing)
    before = ongoing.sim.admin.credits()["by_api"]
    v = _run(ongoing)
    assert v.state is verify.VerifyState.DONE
    report = v.report
    assert report is not None
    assert report["zoho_records"] == report["legacy_rows"] == 200
    assert report["counts"] == {"missing": 0, "duplicates": 0, "strays": 0, "differences": 0,
                                "differing_records": 0, "drift": 0}
    after = ongoing.sim.admin.credits()["by_api"]
    # one read job (50) and the current-user call (1): not one GET per 200 records
    assert after.get("bulk_read_create", 0) - before.get("bulk_read_create", 0) == 50
    assert after.get("users", 0) - before.get("users", 0) == 1
    assert "records_get" not in after
    assert v.credits_estimate == 51


def test_verify_finds_exactly_the_planted_differences_and_repair_fixes_legacy_wins(
    ongoing: Ongoing,
) -> None:
    _sync_everything(ongoing)
    admin = ongoing.sim.admin
    by_parent = {str(r["parent_id"]): r for r in admin.records()}
    admin.ui_delete(by_parent["7"]["id"])  # missing
    admin.ui_edit(by_parent["11"]["id"], {"Customer_Name": "Edited In Zoho"})  # drift, legacy
    admin.ui_edit(by_parent["12"]["id"], {"Notes": "kept in Zoho"})  # drift, zoho wins
    stray = admin.ui_create({"parent_id": "NO-SUCH-ORDER", "Name": "stray"})
    dup = admin.ui_create({**{k: v for k, v in by_parent["20"].items()
                              if k not in ("id", "Owner", "Created_By", "Modified_By",
                                           "Created_Time", "Modified_Time")}})
    ongoing.query("UPDATE orders SET quantity = quantity + 1 WHERE id = 30")  # pending: skipped

    v = _run(ongoing, zoho_wins=["Notes"])
    r = v.report
    assert r is not None
    assert r["missing"] == ["7"]
    assert r["duplicates"] == {"20": sorted([by_parent["20"]["id"], dup])}
    assert r["strays"] == [{"parent_id": "NO-SUCH-ORDER", "zoho_id": stray}]
    assert r["pending_rows"] == 1
    diffs = {(d["parent_id"], d["field"]): d for d in r["differences"]}
    assert set(diffs) == {("11", "Customer_Name"), ("12", "Notes")}
    assert diffs["11", "Customer_Name"]["zoho"] == "Edited In Zoho"
    assert diffs["11", "Customer_Name"]["drift"] is True
    assert diffs["11", "Customer_Name"]["winner"] == "legacy"
    assert diffs["12", "Notes"]["winner"] == "zoho"
    assert r["requeue"] == ["11", "7"]
    assert r["counts"]["drift"] == 2
    assert ongoing.pending() == 1  # a plain verify re-queues nothing

    repaired = _run(ongoing, zoho_wins=["Notes"], repair=True)
    assert repaired.requeued == 2
    assert ongoing.pending() == 3  # 7 and 11, beside the pending 30
    _flush_until_synced(ongoing)
    after = _run(ongoing, zoho_wins=["Notes"])
    r2 = after.report
    assert r2 is not None
    assert r2["missing"] == []
    assert [(d["parent_id"], d["field"]) for d in r2["differences"]] == [("12", "Notes")]
    # strays and duplicates are reported, never deleted
    assert len(r2["strays"]) == 1 and list(r2["duplicates"]) == ["20"]
    fixed = {str(x["parent_id"]): x for x in admin.records()}
    assert fixed["11"]["Customer_Name"] == by_parent["11"]["Customer_Name"]
    assert "7" in fixed


def test_verify_pages_one_job_per_page(ongoing: Ongoing) -> None:
    _sync_everything(ongoing)
    ongoing.sim.admin.bulk_read_page_size(70)
    v = _run(ongoing)
    assert v.report is not None and v.report["zoho_records"] == 200
    assert v.report["counts"]["missing"] == 0
    assert ongoing.sim.admin.credits()["by_api"]["bulk_read_create"] == 3 * 50


def test_verify_refuses_before_sending_when_the_budget_is_short(ongoing: Ongoing) -> None:
    _sync_everything(ongoing)
    ongoing.client.credits.budget = ongoing.client.credits.spent_24h() + 40
    ongoing.client.credits.reserve_credits = 0
    with pytest.raises(CreditBudgetExceeded, match="verify needs about 51 credits"):
        _run(ongoing)
    assert "bulk_read_create" not in ongoing.sim.admin.credits()["by_api"]


def test_cli_verify_json(ongoing: Ongoing, monkeypatch: pytest.MonkeyPatch,
                         capsys: pytest.CaptureFixture[str]) -> None:
    _sync_everything(ongoing)
    monkeypatch.setattr(cmd, "load", lambda args: ongoing.settings)
    assert main(["verify", "--estimate", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"legacy_rows": 200, "jobs": 1,
                                                   "credits_estimate": 51}
    assert main(["verify", "--json", "--poll", "0.05"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["state"] == "done" and doc["report"]["zoho_records"] == 200


def test_metrics_report_the_last_verification(ongoing: Ongoing) -> None:
    from pipeline.metrics import families, read_snapshot

    conn = connect(ongoing.settings)
    try:
        with conn:
            before = read_snapshot(conn, ongoing.settings)
        assert before.verify_age_seconds is None
        assert not [f for f in families(before) if f.name.startswith("ordersync_verify")]
    finally:
        conn.close()
    _sync_everything(ongoing)
    by_parent = {str(r["parent_id"]): r for r in ongoing.sim.admin.records()}
    ongoing.sim.admin.ui_delete(by_parent["3"]["id"])
    ongoing.sim.admin.ui_edit(by_parent["4"]["id"], {"Quantity": 999})
    _run(ongoing)
    conn = connect(ongoing.settings)
    try:
        with conn:
            snap = read_snapshot(conn, ongoing.settings)
    finally:
        conn.close()
    assert snap.verify_found == {"missing": 1, "duplicates": 0, "strays": 0, "differences": 1,
                                 "drift": 1}
    assert snap.verify_age_seconds is not None and 0 <= snap.verify_age_seconds < 60
    found = {f.name: f for f in families(snap)}["ordersync_verify_found"]
    assert {s.labels["kind"]: s.value for s in found.samples}["missing"] == 1


def test_beat_entry_only_when_configured_and_settings_checked() -> None:
    from pipeline.settings import ConfigError, Settings, validate_settings
    from tasks.schedule import VERIFY_START
    from tasks.schedule import verify_schedule as beat_schedule

    assert beat_schedule(Settings()) == {}
    entry = beat_schedule(Settings(verify_crontab="0 3 * * 0"))[VERIFY_START]
    assert entry["task"] == VERIFY_START and entry["options"]["expires"] > 0
    assert entry["schedule"].day_of_week == {0}
    with pytest.raises(ConfigError, match="sync.verify_crontab"):
        validate_settings(Settings(verify_crontab="every sunday"))
    with pytest.raises(ConfigError, match="sync.verify_zoho_wins.*Nope"):
        validate_settings(Settings(verify_zoho_wins="Notes, Nope"))
    validate_settings(Settings(verify_zoho_wins="Notes, Customer_Name"))
