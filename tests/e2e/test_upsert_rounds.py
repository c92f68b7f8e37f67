"""A run whose free rows are cheaper by Upsert calls: extract names the upsert step, which sends
them as ``realtime`` batches of the run; the next claim then finds nothing and ends the run.
Steps called directly (no worker) against zohosim and PostgreSQL."""

from __future__ import annotations

from pipeline import initial_sync
from pipeline.initial_sync import Step, run_progress, start_initial_run
from pipeline.legacy.connection import connect
from pipeline.zoho.client import ZohoClient
from tests.e2e.conftest import MakeE2E


def test_rows_cheaper_by_upsert_go_by_upsert_and_the_run_ends(make_e2e: MakeE2E) -> None:
    world = make_e2e(rows=250, batch_size=25_000, workers=0)
    settings = world.settings
    run_id = start_initial_run(settings)
    client = ZohoClient.from_settings(settings)
    conn = connect(settings)
    try:
        priced = initial_sync.extract(conn, settings, run_id)
        assert (priced.next_step, priced.batch_id, priced.run_id) == (Step.UPSERT, None, run_id)
        assert world.batches() == []  # nothing claimed by extract itself

        sent = initial_sync.upsert(conn, settings, client, run_id)
        assert (sent.next_step, sent.run_id) == (Step.EXTRACT, run_id)
        done = initial_sync.extract(conn, settings, run_id)
        assert done.next_step is None and done.note == "run done"
        # a repeated upsert step for a finished run does nothing
        assert initial_sync.upsert(conn, settings, client, run_id).next_step is None
    finally:
        conn.close()
        client.close()

    batches = world.query(
        "SELECT kind, state, row_count FROM ordersync.batches WHERE run_id = %s ORDER BY id",
        (run_id,),
    )
    assert batches == [("realtime", "reconciled", 100)] * 2 + [("realtime", "reconciled", 50)]
    progress = run_progress(settings, run_id)
    assert progress["state"] == "done"
    assert progress["rows_synced"] == progress["rows_done"] == 250
    assert progress["credits_spent"] == 25  # 10 + 10 + 5, against 500 for a bulk job
    assert world.sim.admin.credits()["by_api"] == {"upsert": 25}
    world.assert_zoho_holds_legacy()
    assert world.unsynced() == 0
