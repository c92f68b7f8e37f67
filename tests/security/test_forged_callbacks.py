"""Forged callbacks over HTTP change nothing but, at most, one early poll.

A real initial sync (one bulk job of 5,000 rows that runs ~10 s in zohosim) with the callback
receiver (``cli.web``'s WSGI app on a real HTTP server) and a real worker. While the job runs:

* wrong tokens (unknown, one character off, the right one with its case changed, with a path
  after it) answer 404 and enqueue nothing;
* the batch's real token (read back from the job's details, as anyone with Zoho access could)
  with a body claiming COMPLETED for another job and a download URL of its own answers 200
  and enqueues exactly one poll: that poll asks Zoho (one GET of the batch's own job), finds
  it still running and changes nothing: same state, same job, no hint kept, no download, no
  row synced, and no next poll asked for (the batch's own chain of polls goes on; before, each
  forged callback started a second chain polling beside it until the job ended);

and after the run has finished, the same token replayed answers 404 and changes nothing.
The run itself ends as it would have without the forgeries. The access log holds no token.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
import requests

from pipeline.initial_sync import callback_path, fresh_token, token_of
from pipeline.zoho.client import ZohoClient
from tests.e2e.conftest import MakeE2E, wait_until

TIMEOUT = 5
ROWS = 5_000
COLUMNS = (
    "state, job_id, job_hint, file_id, row_count, attempts, job_requests, error,"
    " callback_digest, finished_at"
)


def _lie(job_id: str) -> dict[str, Any]:
    """A callback body claiming that ``job_id`` completed, with somebody else's result file."""
    return {
        "data": [
            {
                "id": job_id,
                "operation": "insert",
                "status": "COMPLETED",
                "result": {"download_url": "https://attacker.example/result.zip"},
                "file": {"added_count": ROWS, "skipped_count": 0, "total_count": ROWS},
            }
        ]
    }


@pytest.mark.timeout(180)
def test_forged_callbacks_change_nothing_beyond_one_early_poll(
    make_e2e: MakeE2E, caplog: pytest.LogCaptureFixture
) -> None:
    world = make_e2e(rows=ROWS, batch_size=ROWS, callback=True, in_flight=1)
    world.sim.admin.configure(job_rows_per_second=500, job_queue_seconds=0)  # a 10 s job
    base = world.settings.zoho.callback_url
    assert base
    caplog.set_level(logging.DEBUG, logger="cli.web")

    def post(token: str, body: dict[str, Any], suffix: str = "") -> int:
        url = f"{base}{callback_path(token)}{suffix}"
        return requests.post(url, json=body, timeout=TIMEOUT).status_code

    def batch(batch_id: int) -> tuple[Any, ...]:
        rows = world.query(f"SELECT {COLUMNS} FROM ordersync.batches WHERE id = %s", (batch_id,))
        return rows[0]

    run_id = world.start_run()
    batch_id, job_id = wait_until(
        lambda: (world.query("SELECT id, job_id FROM ordersync.batches WHERE job_id IS NOT NULL")
                 or [None])[0],
        60, "the bulk job to be created",
    )  # fmt: skip
    client = ZohoClient.from_settings(world.settings)
    try:
        job = client.get_job(job_id)  # the token, as the job's details show it
    finally:
        client.close()
    assert not job.terminal, "the job ended before the forgeries: slow it down"
    token = token_of(job.callback_url)
    assert token and len(token) >= 43
    before, polls = batch(batch_id), world.calls("bulk_get")
    assert before[0] == "job_created" and world.calls("download") == 0

    # Wrong tokens: 404, nothing enqueued, nothing read from Zoho.
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    wrong = [fresh_token(), flipped, token.swapcase(), token[:-1]]
    for forged in wrong:
        assert post(forged, _lie(job_id)) == 404, forged
    assert post(token, _lie(job_id), suffix="/x") == 404
    assert world.callbacks == []

    # The right token, a lying body: one poll, of the batch's own job, and nothing else.
    assert post(token, _lie("9" * 18)) == 200
    assert world.callbacks == [batch_id]
    worker = world.workers[0]
    worker.wait_for_log("woken by a callback", timeout=20)  # the early poll's result
    early = [line for line in worker.log().splitlines() if "woken by a callback" in line]
    # it asked for no next poll: the batch's own chain goes on, no second one beside it
    assert len(early) == 1 and "'next': None" in early[0], early
    assert world.calls("bulk_get") > polls
    assert batch(batch_id) == before, "the forged callback changed the batch"
    assert world.calls("download") == 0 and world.unsynced() == ROWS
    assert job_id == batch(batch_id)[1]

    # The run ends as it would have; the real callback came from zohosim.
    progress = world.wait_done(run_id)
    assert progress["state"] == "done", progress
    world.assert_zoho_holds_legacy()
    assert world.callbacks.count(batch_id) >= 2  # ours, then zohosim's

    # Replayed after the batch finished: 404, and nothing moves.
    finished, calls = batch(batch_id), world.sim.admin.credits()["calls_by_api"]
    enqueued = len(world.callbacks)
    assert post(token, _lie(job_id)) == 404
    assert post(token, {"data": [{"id": job_id, "status": "COMPLETED"}]}) == 404
    time.sleep(0.5)
    assert len(world.callbacks) == enqueued
    assert batch(batch_id) == finished
    assert world.sim.admin.credits()["calls_by_api"] == calls
    assert world.unsynced() == 0

    # The access log: every callback request is there, redacted; no token anywhere.
    lines = [record.getMessage() for record in caplog.records]
    access = [line for line in lines if "/zoho/callback/" in line]
    assert len(access) >= len(wrong) + 4, lines
    assert all("/zoho/callback/***" in line for line in access), access
    for secret in (token, *wrong):
        assert not [line for line in lines if secret in line], "a token in the access log"
