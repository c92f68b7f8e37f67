"""Job creation never creates a second job blindly: an ambiguous create-job waits for the job's
callback, a job id named by a forged callback is refused, and only after the wait is a job
created again. Steps called directly (no worker) against zohosim and PostgreSQL."""

from __future__ import annotations

import time
from dataclasses import replace

from pipeline import initial_sync
from pipeline.initial_sync import Step, record_job_hint, start_initial_run
from pipeline.legacy.connection import connect
from pipeline.zoho.client import ZohoClient
from tests.e2e.conftest import MakeE2E


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
