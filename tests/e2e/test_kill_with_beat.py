"""A worker SIGKILLed during an initial-sync upload, with the default recovery settings
(``stall_after`` 20 s, a sweep every 10 s) and a real beat: the sweeper, sent by beat and never
by the test, restarts the batch within ~30 s; every row ends in zohosim once, nothing is created
twice."""

from __future__ import annotations

import time
from collections.abc import Callable

from pipeline.settings import Settings
from tests.e2e.conftest import MakeE2E, wait_until
from tests.fixtures.celery import BeatProcess

ROWS, BATCH = 10_000, 5_000  # two bulk batches (5,000 rows: the smallest bulk job)
STALL = 4.0  # seconds the killed upload hangs in zohosim
# stall_after + one sweep period, and slack for a busy box (a new worker starting, the queue)
RECOVERY_BOUND = Settings().stall_after + 10.0 + 5.0


def test_a_worker_killed_while_uploading_is_resumed_by_beats_sweeper_within_30_s(
    make_e2e: MakeE2E, celery_beat_factory: Callable[..., BeatProcess]
) -> None:
    world = make_e2e(rows=ROWS, batch_size=BATCH, in_flight=1, callback=True, workers=0)
    world.env.pop("ORDERSYNC_SYNC_STALL_AFTER")  # the default: 20 s
    worker = world.start_worker()
    beat = celery_beat_factory(extra_env=world.env)
    sim = world.sim.admin
    sim.fault("upload", "stall", count=1, seconds=STALL)

    run_id = world.start_run()
    wait_until(lambda: world.batch_state(1) == "rendered" and sim.in_flight() > 0, 30,
               "batch 1's upload in zohosim")  # fmt: skip
    killed_at = time.monotonic()
    worker.kill()
    world.start_worker()
    wait_until(lambda: world.batch_state(1) not in ("rendered", None), 60, "batch 1 uploaded")
    recovery = time.monotonic() - killed_at
    progress = world.wait_done(run_id, timeout=120)

    print(f"upload kill: batch 1 moved again {recovery:.1f} s after the SIGKILL")
    assert recovery <= RECOVERY_BOUND, recovery
    assert progress["state"] == "done"
    assert world.unsynced() == 0
    world.assert_zoho_holds_legacy()  # every row, once, with its latest values
    # the killed upload reached zohosim: that orphan file is sent again (0 credits); no second job
    assert world.calls("upload") == ROWS // BATCH + 1
    assert world.calls("bulk_create") == ROWS // BATCH
    assert sim.credits()["by_api"]["bulk_create"] == ROWS // BATCH * 500
    assert progress["batches"] == {"reconciled": ROWS // BATCH}
    assert "ordersync.sweep" in beat.log()
    assert "re-enqueueing upload" in "".join(w.log() for w in world.workers)
