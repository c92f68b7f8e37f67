"""A fatal answer in poll or reconcile (a job Zoho no longer knows) is retried a bounded number
of times, then fails the batch with the reason and releases its rows, which go round again."""

from __future__ import annotations

import time

from pipeline import initial_sync
from pipeline.initial_sync import MAX_STEP_ERRORS, Step, start_initial_run
from pipeline.legacy.connection import connect
from pipeline.zoho.client import ZohoClient
from tests.e2e.conftest import MakeE2E, wait_until

ROWS = 5_000  # one bulk batch (the smallest the planner sends as a bulk job)


def test_a_job_zoho_no_longer_knows_fails_its_batch_and_the_rows_go_round_again(
    make_e2e: MakeE2E,
) -> None:
    world = make_e2e(rows=ROWS, batch_size=ROWS, in_flight=1)
    world.sim.admin.configure(job_rows_per_second=500)  # 10 s: time to lose the job
    run_id = world.start_run()
    wait_until(lambda: world.batch_state(1) == "job_created", 30, "batch 1's job")
    world.sim.admin.reset()  # Zoho forgets the job (and every record, and the credits)
    world.sim.admin.configure(job_rows_per_second=50_000)
    progress = world.wait_done(run_id, timeout=90)

    assert progress["state"] == "done"
    (state, error, stats), *_ = world.query(
        "SELECT state, error, stats FROM ordersync.batches WHERE id = 1"
    )
    assert state == "failed" and error.startswith("poll: ") and "RESOURCE_NOT_FOUND" in error
    assert stats["step_errors"] == {"poll": MAX_STEP_ERRORS}
    assert progress["batches"] == {"failed": 1, "reconciled": 1}
    world.assert_zoho_holds_legacy()  # batch 2 took the released rows
    assert world.unsynced() == 0
    assert world.sim.admin.credits()["by_api"]["bulk_create"] == 500  # one job since the reset


def test_a_result_that_cannot_be_downloaded_fails_its_batch_after_bounded_attempts(
    make_e2e: MakeE2E,
) -> None:
    world = make_e2e(rows=ROWS, batch_size=ROWS, workers=0)
    settings = world.settings
    run_id = start_initial_run(settings)
    client = ZohoClient.from_settings(settings)
    conn = connect(settings)
    try:
        batch_id = initial_sync.extract(conn, settings, run_id).batch_id
        assert batch_id is not None
        assert initial_sync.render(conn, settings, batch_id).next_step is Step.UPLOAD
        assert initial_sync.upload(conn, settings, client, batch_id).next_step is Step.CREATE_JOB
        assert initial_sync.create_job(conn, settings, client, batch_id).next_step is Step.POLL
        deadline = time.monotonic() + 30
        while initial_sync.poll(conn, settings, client, batch_id).next_step is Step.POLL:
            assert time.monotonic() < deadline, "the job did not finish"
            time.sleep(0.1)
        assert world.batch_state(batch_id) == "job_done"
        world.sim.admin.reset()  # the result file is gone: 404 on download

        countdowns = []
        for _ in range(MAX_STEP_ERRORS - 1):
            again = initial_sync.reconcile(conn, settings, client, batch_id)
            assert again.next_step is Step.RECONCILE and again.batch_id == batch_id
            countdowns.append(again.countdown)
            assert world.batch_state(batch_id) == "job_done"
        assert countdowns == [1.0, 2.0]
        failed = initial_sync.reconcile(conn, settings, client, batch_id)
        assert failed.next_step is Step.EXTRACT and failed.run_id == run_id  # the next claim

        state, error, stats, finished = world.query(
            "SELECT state, error, stats, finished_at FROM ordersync.batches WHERE id = %s",
            (batch_id,),
        )[0]
        assert state == "failed" and finished is not None
        assert error.startswith("reconcile: ") and "RESOURCE_NOT_FOUND" in error
        assert stats["step_errors"] == {"reconcile": MAX_STEP_ERRORS}
        assert world.unsynced() == ROWS  # nothing marked from a result never read
        # the claims are released: the same rows are claimed again, as a new bulk batch
        again = initial_sync.extract(conn, settings, run_id)
        assert again.next_step is Step.RENDER and again.batch_id == batch_id + 1
        rows = world.query(
            "SELECT row_count FROM ordersync.batches WHERE id = %s", (again.batch_id,)
        )
        assert rows == [(ROWS,)]
    finally:
        conn.close()
        client.close()
