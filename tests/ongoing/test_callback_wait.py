"""A job creation of unknown outcome waits for its callback as long as the batch's job could
take at the speed of the ledger's finished jobs (real PostgreSQL): not a fixed 300 s."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pipeline import ledger
from pipeline.initial_sync.sending import expected_callback_wait
from pipeline.legacy.connection import connect
from tests.ongoing.conftest import Ongoing


def test_the_callback_wait_follows_the_speed_of_finished_jobs(ongoing: Ongoing) -> None:
    settings = replace(
        ongoing.settings, zoho=replace(ongoing.settings.zoho, callback_url="https://cb.example")
    )
    (open_id,) = ongoing.query(
        "INSERT INTO ordersync.batches (kind, state, row_count) VALUES ('bulk', 'uploaded', 25000)"
        " RETURNING id"
    )[0]
    conn = connect(settings)
    try:
        batch = ledger.get_batch(conn, settings, open_id)
        assert batch is not None
        # no finished job yet: the assumed 25,000 rows a minute, 60 s x2 + 10 s
        assert expected_callback_wait(conn, settings, batch) == pytest.approx(130.0)
        # jobs so far ran at 250 rows a second: 100 s x2 + 10 s
        ongoing.query(
            "INSERT INTO ordersync.batches (kind, state, row_count, job_requested_at, finished_at)"
            " VALUES ('bulk', 'reconciled', 50000, now() - interval '200 s', now())"
        )
        conn.rollback()
        assert expected_callback_wait(conn, settings, batch) == pytest.approx(210.0, abs=1.0)
        # capped by job_callback_wait; no callback URL: no wait at all
        capped = replace(settings, job_callback_wait=90.0)
        assert expected_callback_wait(conn, capped, batch) == 90.0
        assert expected_callback_wait(conn, ongoing.settings, batch) == 0.0
    finally:
        conn.close()
