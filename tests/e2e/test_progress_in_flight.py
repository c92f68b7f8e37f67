"""While a bulk job runs and no row is done yet, the progress shows the job and Zoho's counts,
and an ETA from the job's speed. Steps called directly (no worker) against zohosim."""

from __future__ import annotations

import time

from cli.commands.sync import format_progress
from pipeline import initial_sync
from pipeline.initial_sync import Step, run_progress, start_initial_run
from pipeline.legacy.connection import connect
from pipeline.progress import SpeedSource, activity
from pipeline.zoho.client import ZohoClient
from tests.e2e.conftest import MakeE2E


def test_a_running_job_shows_zohos_counts_and_an_eta(make_e2e: MakeE2E) -> None:
    world = make_e2e(rows=5_000, batch_size=5_000, workers=0)
    world.sim.admin.configure(job_rows_per_second=500, job_queue_seconds=0)  # a 10 s job
    settings = world.settings
    run_id = start_initial_run(settings)
    client = ZohoClient.from_settings(settings)
    conn = connect(settings)
    try:
        batch_id = initial_sync.extract(conn, settings, run_id).batch_id
        assert batch_id is not None
        before = activity(settings, run_id, run_progress(settings, run_id))
        assert (before["rows_preparing"], before["jobs_running"]) == (5_000, 0)
        assert before["job_speed_source"] == SpeedSource.ASSUMED.value
        initial_sync.render(conn, settings, batch_id)
        initial_sync.upload(conn, settings, client, batch_id)
        assert initial_sync.create_job(conn, settings, client, batch_id).next_step is Step.POLL
        time.sleep(3)
        assert initial_sync.poll(conn, settings, client, batch_id).next_step is Step.POLL
        (stats,) = world.query("SELECT stats FROM ordersync.batches WHERE id = %s", (batch_id,))[0]
        assert 0 < stats["job_processed"] < 5_000  # Zoho's counts of a job under way

        now = activity(settings, run_id, run_progress(settings, run_id))
        assert now["rows_done"] == 0 and now["eta_s"] is None  # what the old line had to go on
        assert (now["rows_at_zoho"], now["jobs_running"], now["jobs_reported"]) == (5_000, 1, 1)
        assert now["job_rows_processed"] == stats["job_processed"]
        assert now["job_speed_source"] == SpeedSource.ZOHO.value
        assert 300 < now["job_rows_per_s"] < 600  # 500 rows/s as of the poll
        assert 0 < now["eta_jobs_s"] < 25
        lines = format_progress(now)
        assert "ETA -" not in lines[0]
        assert lines[2].startswith("in flight: 5,000 rows uploaded to Zoho, 1 bulk job running,"
                                   " Zoho reports ")  # fmt: skip
    finally:
        conn.close()
        client.close()
