"""Job creation never creates a second job blindly: an ambiguous create-job waits for the job's
callback, a job id named by a forged callback is refused, and only after the wait is a job
created again. Steps called directly (no worker) against zohosim and PostgreSQL."""

from __future__ import annotations

import time
from dataclasses import replace

from pipeline import initial_sync
from pipeline.initial_sync import Step, record_job_hint, start_initial_run
from pipeline.initial_sync.decisions import JOB_SLOT_RECHECK
from pipeline.legacy.connection import connect
from pipeline.zoho.client import ZohoClient
from tests.e2e.conftest import MakeE2E, wait_until


def test_ambiguous_create_waits_refuses_a_forged_hint_then_creates_again(
    make_e2e: MakeE2E,
) -> None:
    world = make_e2e(rows=5_000, batch_size=5_000, workers=0, callback=True)  # a bulk batch
    settings = replace(world.settings, job_callback_wait=1.5)
    run_id = start_initial_run(settings)
    client = ZohoClient.from_settings(settings)
    conn = connect(settings)
    try:
        batch_id = initial_sync.extract(conn, settings, run_id).batch_id
        assert batch_id is not None
        assert initial_sync.render(conn, settings, batch_id).next_step is Step.UPLOAD
        assert initial_sync.upload(conn, settings, client, batch_id).next_step is Step.CREATE_JOB

        world.sim.admin.fault("bulk_create", "drop")  # sent, answer lost: ambiguous
        waiting = initial_sync.create_job(conn, settings, client, batch_id)
        assert waiting.next_step is Step.CREATE_JOB and waiting.countdown > 0
        again = initial_sync.create_job(conn, settings, client, batch_id)
        assert again.next_step is Step.CREATE_JOB  # still waiting: no second request
        created_before = world.sim.admin.stats()["jobs"]["total"]

        # a callback naming a job that does not call back with this batch's token is refused
        (file_id,) = world.query("SELECT file_id FROM ordersync.batches WHERE id = %s",
                                 (batch_id,))[0]  # fmt: skip
        forged = client.create_upsert_job(
            file_id, settings.mapping,
            callback_url=f"{settings.zoho.callback_url}/zoho/callback/{'x' * 43}",
        )  # fmt: skip
        assert record_job_hint(settings, batch_id, forged)
        refused = initial_sync.poll(conn, settings, client, batch_id)
        assert refused.next_step is None
        state, hint, job_id = world.query(
            "SELECT state, job_hint, job_id FROM ordersync.batches WHERE id = %s", (batch_id,)
        )[0]
        assert (state, hint, job_id) == ("uploaded", None, None)

        time.sleep(1.6)  # the callback wait is over: create again, counted
        created = initial_sync.create_job(conn, settings, client, batch_id)
        assert created.next_step is Step.POLL
        state, requests, stats = world.query(
            "SELECT state, job_requests, stats FROM ordersync.batches WHERE id = %s",
            (batch_id,),
        )[0]
        assert state == "job_created" and requests == 2 and stats["jobs_recreated"] == 1
        assert world.sim.admin.stats()["jobs"]["total"] == created_before + 2  # forged + ours
    finally:
        conn.close()
        client.close()


def test_one_batch_waits_uploaded_for_a_job_slot_and_is_woken_when_a_job_ends(
    make_e2e: MakeE2E,
) -> None:
    """``batches_in_flight`` jobs at most; one batch more is claimed, rendered and uploaded
    meanwhile and creates its job as soon as one ends (woken by that job's poll, not by its own
    10 s recheck)."""
    # batches above 5,000 rows: below that upserts are cheaper and no batch goes by bulk
    world = make_e2e(rows=24_000, batch_size=6_000, in_flight=2, concurrency=2)
    world.sim.admin.configure(job_rows_per_second=3_000)  # 2 s a job
    seen_jobs, seen_waiting = 0, 0
    trace: list[tuple[str, ...]] = []
    run_id = world.start_run()

    def sample() -> bool:
        nonlocal seen_jobs, seen_waiting
        rows = world.query(
            "SELECT count(*) FILTER (WHERE state = 'job_created'),"
            " count(*) FILTER (WHERE state = 'uploaded' AND job_requested_at IS NULL),"
            " bool_and(state IN ('reconciled', 'failed'))"
            " FROM ordersync.batches WHERE run_id = %s",
            (run_id,),
        )
        jobs, waiting, finished = rows[0]
        states = tuple(
            s for (s,) in world.query(
                "SELECT state FROM ordersync.batches WHERE run_id = %s ORDER BY id", (run_id,)
            )
        )
        if not trace or trace[-1] != states:
            trace.append(states)
        seen_jobs, seen_waiting = max(seen_jobs, jobs), max(seen_waiting, waiting)
        return bool(finished) and world.query(
            "SELECT state FROM ordersync.runs WHERE id = %s", (run_id,)
        )[0][0] != "running"

    wait_until(sample, timeout=90, what="the run to finish")
    assert seen_jobs == 2, f"more jobs than batches_in_flight, or never two at once: {trace}"
    assert seen_waiting >= 1, "no batch was ready and waiting for a job slot"
    ((jobs,),) = world.query("SELECT sum(job_requests) FROM ordersync.batches")
    assert jobs == 4  # one create-job per batch: waiting sent nothing
    # each waiting batch was woken by the poll that saw a job end (2 s jobs), not by its own
    # recheck 10 s later
    waits = world.query(
        "SELECT id, extract(epoch FROM job_requested_at) - (stats->>'slot_wait_from')::float"
        " FROM ordersync.batches WHERE stats ? 'slot_wait_from' ORDER BY id"
    )
    assert waits, "no batch waited for a job slot"
    assert all(0 <= w < JOB_SLOT_RECHECK for _, w in waits), waits
    world.assert_zoho_holds_legacy()
    assert world.unsynced() == 0
