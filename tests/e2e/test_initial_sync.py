"""The initial sync end to end: real worker processes, Redis, PostgreSQL and zohosim over HTTP."""

from __future__ import annotations

import time

import pytest

from pipeline.initial_sync import RunInProgress, start_initial_run
from pipeline.zoho.codes import VALIDATION_CODE
from tests.e2e.conftest import MakeE2E, wait_until

BULK_JOB_CREDITS = 500


def test_60000_rows_in_three_batches_land_in_zoho_exactly(make_e2e: MakeE2E) -> None:
    world = make_e2e(rows=60_000, batch_size=20_000, in_flight=3, concurrency=2)
    started = time.monotonic()
    run_id = world.start_run()
    progress = world.wait_done(run_id, timeout=180)
    elapsed = time.monotonic() - started

    assert progress["state"] == "done"
    assert progress["rows_total"] == progress["rows_synced"] == progress["rows_done"] == 60_000
    assert progress["batches"] == {"reconciled": 3}
    assert progress["credits_spent"] == 3 * BULK_JOB_CREDITS + 1  # and the GET org
    world.assert_zoho_holds_legacy()
    assert world.unsynced() == 0
    credits = world.sim.admin.credits()
    assert credits["by_api"]["bulk_create"] == 3 * BULK_JOB_CREDITS
    # every credit explained: three jobs and the one GET org for the org's zgid
    assert credits["by_api"] == {"bulk_create": 1500, "org": 1}
    assert credits["used_24h"] == 1501
    assert credits["calls_by_api"]["upload"] == 3
    assert credits["calls_by_api"]["bulk_create"] == 3
    assert "upsert" not in credits["calls_by_api"]  # nothing failed: no retry round
    print(f"60,000 rows in {elapsed:.1f} s")


def test_a_second_initial_sync_is_refused_while_one_runs(make_e2e: MakeE2E) -> None:
    world = make_e2e(rows=100, batch_size=100, workers=0)
    run_id = start_initial_run(world.settings)
    with pytest.raises(RunInProgress) as refused:
        start_initial_run(world.settings)
    assert refused.value.run_id == run_id
    assert refused.value.summary["state"] == "running"
    assert refused.value.summary["rows_total"] == 100


def test_rows_that_break_a_field_rule_are_held_back_and_never_sent(make_e2e: MakeE2E) -> None:
    world = make_e2e(rows=6_000, batch_size=6_000, bad_rows=12)
    run_id = world.start_run()
    progress = world.wait_done(run_id)

    assert progress["state"] == "done"
    assert progress["rows_validated_out"] == 12 and progress["rows_skipped"] == 0
    assert progress["rows_done"] == 6_000 and progress["rows_synced"] == 6_000 - 12
    # one bulk job of the 5,988 rows Zoho can take, and nothing else: the 12 are never sent
    credits = world.sim.admin.credits()
    assert credits["by_api"] == {"bulk_create": BULK_JOB_CREDITS, "org": 1}
    assert "upsert" not in credits["calls_by_api"]
    assert progress["credits_spent"] == credits["used_24h"] == BULK_JOB_CREDITS + 1
    kinds = world.query(
        "SELECT kind, state, row_count FROM ordersync.batches WHERE run_id = %s ORDER BY id",
        (run_id,),
    )
    assert kinds == [("bulk", "reconciled", 6_000 - 12)]
    errors = world.query(
        "SELECT row_key, code, field, message, attempts, quarantined FROM ordersync.row_errors"
    )
    bad = {key for key, *_ in errors}
    assert len(bad) == 12
    assert {code for _, code, *_ in errors} == {VALIDATION_CODE}
    assert {field for _, _, field, *_ in errors} == {
        "Email", "Customer_Name", "Order_Status", "Name"
    }  # fmt: skip
    assert all(quarantined and attempts == 1 for *_, attempts, quarantined in errors)
    assert not any("not-an-email" in message for _, _, _, message, _, _ in errors)
    unsynced = {str(r[0]) for r in world.query("SELECT id FROM orders WHERE NOT synced")}
    assert unsynced == bad
    assert not bad & {r["parent_id"] for r in world.sim.admin.records()}
    world.assert_zoho_holds_legacy(except_keys=frozenset(bad))


def test_rows_updated_while_their_batch_is_in_flight_reach_zoho_with_their_latest_values(
    make_e2e: MakeE2E,
) -> None:
    world = make_e2e(rows=5_000, batch_size=5_000, in_flight=1)
    world.sim.admin.fault("upload", "stall", count=1, seconds=2.0)
    run_id = world.start_run()
    # batch 1 is rendered (its zip holds the old values) and its upload is stalled: edit rows
    wait_until(lambda: world.batch_state(1) == "rendered", 30, "batch 1 rendered")
    edited = world.query(
        "UPDATE orders SET customer_name = 'Edited In Flight', quantity = quantity + 100"
        " WHERE id IN (1, 2, 500, 1000) RETURNING id"
    )
    assert len(edited) == 4
    progress = world.wait_done(run_id)

    assert progress["state"] == "done"
    world.assert_zoho_holds_legacy()
    stats = world.query("SELECT stats FROM ordersync.batches WHERE id = 1")[0][0]
    assert stats["stale"] == 4  # sent with the old values, left pending, sent again
    # … by one upsert call (1 credit), not by a second bulk job
    credits = world.sim.admin.credits()["by_api"]
    assert credits == {"bulk_create": BULK_JOB_CREDITS, "upsert": 1, "org": 1}
    names = {r["parent_id"]: r["Customer_Name"] for r in world.sim.admin.records()}
    assert all(names[str(key)] == "Edited In Flight" for (key,) in edited)


def test_poll_path_completes_batches_without_a_callback(make_e2e: MakeE2E) -> None:
    world = make_e2e(rows=10_000, batch_size=5_000, callback=False)
    world.sim.admin.configure(job_rows_per_second=10_000)  # ~0.5 s a job: a few polls each
    progress = world.wait_done(world.start_run())

    assert progress["state"] == "done"
    world.assert_zoho_holds_legacy()
    assert world.callbacks == []
    polls = [stats.get("polls", 0) for *_, stats in world.batches()]
    assert polls and all(p >= 1 for p in polls)


def test_callback_path_completes_batches(make_e2e: MakeE2E) -> None:
    world = make_e2e(rows=10_000, batch_size=5_000, callback=True)
    world.sim.admin.configure(job_rows_per_second=10_000)
    progress = world.wait_done(world.start_run())

    assert progress["state"] == "done"
    world.assert_zoho_holds_legacy()
    # each job called back on its batch's token
    assert sorted(map(str, world.callbacks)) == ["1", "2"]
    assert world.calls("bulk_create") == 2


def test_the_tail_cheaper_by_upsert_goes_by_upsert_beside_the_bulk_job(make_e2e: MakeE2E) -> None:
    # 5,300 rows: one bulk job of 5,000 (500 credits, as cheap as 50 upserts; fewer calls) and
    # 300 rows by three upsert calls (30 credits), not a second bulk job (500)
    world = make_e2e(rows=5_300, batch_size=5_000)
    run_id = world.start_run()
    progress = world.wait_done(run_id)

    assert progress["state"] == "done"
    assert progress["rows_synced"] == progress["rows_done"] == 5_300
    world.assert_zoho_holds_legacy()
    assert world.unsynced() == 0
    credits = world.sim.admin.credits()
    assert credits["by_api"] == {"bulk_create": BULK_JOB_CREDITS, "upsert": 30, "org": 1}
    assert credits["calls_by_api"]["upsert"] == 3
    assert progress["credits_spent"] == BULK_JOB_CREDITS + 30 + 1  # and the GET org
    assert progress["batches"] == {"reconciled": 4}
