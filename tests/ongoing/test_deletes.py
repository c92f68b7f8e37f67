"""Deletes (opt-in) against zohosim: tombstones, the cap, dry run, credits, a real worker+beat."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace

import pytest
from celery import Celery

from cli.main import main
from pipeline import deletes
from pipeline.legacy import schema
from pipeline.legacy.connection import connect
from tests.fixtures.celery import BeatProcess, WorkerFactory
from tests.ongoing.conftest import Ongoing
from tests.ongoing.test_tasks import wait_until, worker_env
from tests.ongoing.test_verify import _sync_everything


@pytest.fixture
def on(ongoing: Ongoing) -> Ongoing:
    """Every order synced into zohosim, deletes on (the delete trigger installed)."""
    _sync_everything(ongoing)
    ongoing.settings = replace(ongoing.settings, deletes=True, max_deletes=5)
    assert "triggers" in schema.install(ongoing.settings)
    return ongoing


def _run(
    ongoing: Ongoing, *, dry_run: bool = False, allow: int | None = None
) -> deletes.DeleteReport:
    conn = connect(ongoing.settings)
    try:
        return deletes.run(conn, ongoing.settings, ongoing.client, dry_run=dry_run, allow=allow)
    finally:
        conn.close()


def _sim_delete_credits(ongoing: Ongoing) -> int:
    return int(ongoing.sim.admin.credits()["by_api"].get("delete", 0))


def _tombstones(ongoing: Ongoing) -> int:
    return int(ongoing.query("SELECT count(*) FROM ordersync.tombstones")[0][0])


def test_deleted_rows_delete_their_zoho_records_once_at_the_predicted_price(on: Ongoing) -> None:
    ids = {str(r[0]): str(r[1]) for r in on.query("SELECT id, zoho_id FROM orders WHERE id <= 3")}
    on.query("DELETE FROM orders WHERE id IN (1, 2, 3)")
    on.seed(1, seed=5)  # a new order that never reached Zoho, deleted at once
    on.query("DELETE FROM orders WHERE id = (SELECT max(id) FROM orders)")
    assert _tombstones(on) == 4

    dry = _run(on, dry_run=True)
    assert dry.plan.deletable == 3 and dry.plan.never_sent == 1
    assert (dry.plan.calls, dry.plan.credits) == (1, 1)
    assert _sim_delete_credits(on) == 0 and _tombstones(on) == 4  # a dry run sends nothing

    report = _run(on)
    assert (report.deleted, report.already_gone, report.failed) == (3, 0, 0)
    assert report.credits_spent == report.plan.credits == _sim_delete_credits(on) == 1
    remaining = {r["id"] for r in on.sim.admin.records()}
    assert not remaining & set(ids.values()) and len(remaining) == 197
    assert _tombstones(on) == 0

    again = _run(on)  # safe to run twice: nothing left, nothing spent
    assert again.calls == 0 and _sim_delete_credits(on) == 1


def test_a_run_above_max_deletes_sends_nothing_until_allowed(on: Ongoing) -> None:
    on.query("DELETE FROM orders WHERE id BETWEEN 10 AND 15")  # 6 > max_deletes 5
    report = _run(on)
    assert report.refused and "max_deletes = 5" in report.refused
    assert report.calls == 0 and _sim_delete_credits(on) == 0
    assert len(on.sim.admin.records()) == 200 and _tombstones(on) == 6
    gauges = _delete_gauges(on)
    assert gauges == {"ordersync_deletes_pending": 6, "ordersync_deletes_over_cap": 1}
    allowed = _run(on, allow=6)
    assert allowed.deleted == 6 and len(on.sim.admin.records()) == 194
    assert _delete_gauges(on) == {"ordersync_deletes_pending": 0, "ordersync_deletes_over_cap": 0}


def _delete_gauges(ongoing: Ongoing) -> dict[str, float]:
    from pipeline.metrics import families, read_snapshot

    conn = connect(ongoing.settings)
    try:
        with conn:
            snapshot = read_snapshot(conn, ongoing.settings)
    finally:
        conn.close()
    return {f.name: f.samples[0].value for f in families(snapshot)
            if f.name.startswith("ordersync_deletes_")}


def test_gone_in_zoho_recreated_in_legacy_and_refused_ids(on: Ongoing) -> None:
    zoho_20 = str(on.query("SELECT zoho_id FROM orders WHERE id = 20")[0][0])
    on.sim.admin.ui_delete(zoho_20)  # someone deleted it in Zoho already
    on.query("DELETE FROM orders WHERE id = 20")
    row = on.query("SELECT * FROM orders WHERE id = 21")
    on.query("DELETE FROM orders WHERE id = 21")  # deleted, then re-created: the sync owns it
    placeholders = ", ".join(["%s"] * len(row[0]))
    on.query(f"INSERT INTO orders VALUES ({placeholders})", row[0])
    on.query("DELETE FROM orders WHERE id = 23")
    on.query("UPDATE ordersync.tombstones SET zoho_id = 'no-such-record' WHERE row_key = '23'")

    plan = _run(on, dry_run=True).plan
    assert (plan.revived, plan.deletable) == (1, 2)
    report = _run(on)
    assert report.already_gone == 2  # 20 (deleted in Zoho) and 23 (an id Zoho never had)
    assert report.deleted == 0 and report.calls == 1 and report.credits_spent == 1
    assert _tombstones(on) == 0
    assert str(on.query("SELECT id FROM orders WHERE id = 21")[0][0]) == "21"
    assert len(on.sim.admin.records()) == 199  # 21's record kept


def test_ordersync_deletes_command(
    on: Ongoing, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import cli.commands.deletes as cmd

    monkeypatch.setattr(cmd, "load", lambda args: on.settings)
    on.query("DELETE FROM orders WHERE id IN (30, 31)")
    assert main(["deletes", "--dry-run", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["plan"]["deletable"] == 2 and doc["credits_predicted"] == 1 and doc["dry_run"]
    assert _sim_delete_credits(on) == 0
    assert main(["deletes"]) == 0
    out = capsys.readouterr().out
    assert "will spend 1 credits" in out and "deleted 2" in out and "spent 1 credits" in out
    on.query("DELETE FROM orders WHERE id BETWEEN 40 AND 49")
    assert main(["deletes"]) == 3  # above max_deletes: refused
    monkeypatch.setattr(cmd, "load", lambda args: replace(on.settings, deletes=False))
    assert main(["deletes"]) == 2
    assert "deletes are off" in capsys.readouterr().err


def test_beat_and_a_real_worker_delete_on_schedule(
    on: Ongoing,
    celery_worker_factory: WorkerFactory,
    celery_beat_factory: Callable[..., BeatProcess],
    celery_sender: Celery,
) -> None:
    env = worker_env(on, deletes="true", deletes_every="1", max_deletes="5")
    celery_worker_factory(extra_env=env)
    celery_beat_factory(extra_env=env)
    on.query("DELETE FROM orders WHERE id IN (60, 61)")
    wait_until(lambda: _tombstones(on) == 0, 30, "beat's delete run")
    assert len(on.sim.admin.records()) == 198
    assert _sim_delete_credits(on) == 1


def test_a_row_deleted_while_in_flight_waits_then_its_new_record_is_deleted(on: Ongoing) -> None:
    from pipeline import upserts
    from pipeline.legacy.extract import claim_realtime
    from pipeline.serialize import json_record

    on.seed(1, seed=9)  # a new order, pending
    new_id = int(on.query("SELECT max(id) FROM orders")[0][0])
    conn = connect(on.settings)
    try:
        batch = claim_realtime(conn, on.settings, limit=100)
        assert batch is not None and [str(r.key) for r in batch.rows] == [str(new_id)]
        on.query("DELETE FROM orders WHERE id = %s", (new_id,))  # deleted while in flight
        plan = _run(on, dry_run=True).plan
        assert (plan.in_flight, plan.deletable) == (1, 0)
        assert _run(on).calls == 0 and _tombstones(on) == 1  # waits for its batch
        records = [json_record(on.settings.mapping, row.texts) for row in batch.rows]
        outcomes = on.client.upsert(records, batch_id=batch.batch_id)
        upserts.reconcile(conn, on.settings, batch, outcomes, seconds=0.1)
    finally:
        conn.close()
    created = {str(r["parent_id"]): r["id"] for r in on.sim.admin.records()}[str(new_id)]
    assert on.query("SELECT zoho_id FROM ordersync.tombstones")[0][0] == created
    report = _run(on)
    assert report.deleted == 1 and report.credits_spent == 1
    assert str(new_id) not in {str(r["parent_id"]) for r in on.sim.admin.records()}
