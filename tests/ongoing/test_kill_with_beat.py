"""A worker SIGKILLed during a near-real-time Upsert call, with the default recovery settings
(``stall_after`` 20 s, a sweep every 10 s, a check every 30 s) and a real beat: the sweeper
releases the abandoned batch and asks for a check at once; every changed row ends in zohosim
exactly once with its latest values within ~30 s."""

from __future__ import annotations

import time
from collections.abc import Callable

from pipeline import ledger
from pipeline.initial_sync import Resume, resume_released, runs_of_batches
from pipeline.legacy.connection import connect
from pipeline.legacy.extract import claim_realtime
from pipeline.settings import Settings
from pipeline.upserts import release_abandoned
from tasks.schedule import REALTIME_CHECK
from tests.fixtures.celery import BeatProcess, WorkerFactory
from tests.ongoing.conftest import Ongoing
from tests.ongoing.test_tasks import wait_until, worker_env

STALL = 6.0  # seconds the killed upsert hangs in zohosim (it then lands, with older values)
RECOVERY_BOUND = Settings().stall_after + 10.0 + 5.0


def zoho_has_latest(ongoing: Ongoing, ids: range) -> bool:
    legacy = {str(i): (s, n) for i, s, n in ongoing.query(
        "SELECT id, status, notes FROM orders WHERE id = ANY(%s)", (list(ids),))}  # fmt: skip
    records = ongoing.sim_records()
    return all(
        key in records
        and (records[key].get("Order_Status"), records[key].get("Notes") or None)
        == (status, notes or None)
        for key, (status, notes) in legacy.items()
    )


def test_a_worker_killed_during_a_realtime_upsert_loses_nothing_and_recovers_within_30_s(
    ongoing: Ongoing,
    celery_worker_factory: WorkerFactory,
    celery_beat_factory: Callable[..., BeatProcess],
    celery_sender: object,
) -> None:
    defaults = Settings()
    env = worker_env(ongoing, realtime_check=str(defaults.realtime_check),
                     realtime_max_delay=str(defaults.realtime_max_delay))  # fmt: skip
    worker = celery_worker_factory(extra_env=env)
    celery_beat_factory(extra_env=env)
    # Beat's checks and sweeps both fall on multiples of 10 s from its start: kill 13 s in, so
    # the batch is stuck (20 s) only after the check at 30 s; the sweep at 40 s must free it.
    time.sleep(13)
    sim = ongoing.sim.admin
    sim.fault("upsert", "stall", count=1, seconds=STALL)

    ongoing.change(range(1, 101))  # 100 ready rows: one full batch at the next check
    celery_sender.send_task(REALTIME_CHECK)  # type: ignore[attr-defined]  # beat's next is 30 s off
    wait_until(lambda: sim.in_flight() > 0, 15, "the upsert in zohosim")
    killed_at = time.monotonic()
    worker.kill()
    # edits while the batch is lost: the same rows again, and rows nobody claimed
    ongoing.change(range(1, 51), status="Cancelled")
    ongoing.query("UPDATE orders SET notes = 'after the kill' WHERE id BETWEEN 91 AND 110")
    second = celery_worker_factory(extra_env=env)

    wait_until(lambda: ongoing.pending() == 0 and zoho_has_latest(ongoing, range(1, 111)),
               60, "every change in zohosim")  # fmt: skip
    recovery = time.monotonic() - killed_at

    print(f"realtime upsert kill: all synced {recovery:.1f} s after the SIGKILL")
    assert recovery <= RECOVERY_BOUND, recovery
    keys = [str(r["parent_id"]) for r in sim.records()]
    assert sorted(keys, key=int) == [str(i) for i in range(1, 111)]  # each changed row, once
    assert "near-real-time check" in second.log()  # the sweep asked for the check
    batch_state, run_state = ongoing.query(
        "SELECT b.state, r.state FROM ordersync.batches b JOIN ordersync.runs r ON r.id = b.run_id"
        " ORDER BY b.id LIMIT 1"
    )[0]
    assert batch_state, run_state == ("failed", "failed")  # the lost flush, released and ended


def test_freed_upsert_batches_hand_their_bulk_run_on_and_end_their_realtime_run(
    ongoing: Ongoing,
) -> None:
    settings = ongoing.settings
    ongoing.change(range(1, 21))
    conn = connect(settings)
    try:
        with conn:
            initial = ledger.create_run(conn, settings, ledger.RunKind.INITIAL)
            flush = ledger.create_run(conn, settings, ledger.RunKind.REALTIME)
        # two workers claimed upsert batches, one for each run, then died (no lock held)
        of_initial = claim_realtime(conn, settings, limit=10, run_id=initial)
        of_flush = claim_realtime(conn, settings, limit=10, run_id=flush)
        assert of_initial is not None and of_flush is not None
        ids = [of_initial.batch_id, of_flush.batch_id]
        assert {r for r, _ in runs_of_batches(conn, settings, ids)} == {initial, flush}
        ongoing.query("UPDATE ordersync.batches SET updated_at = now() - interval '1 hour'")
        released = release_abandoned(conn, settings)
        assert sorted(released) == sorted(ids)
        assert resume_released(conn, settings, released) == Resume((initial,), True)
        assert resume_released(conn, settings, []) == Resume()
    finally:
        conn.close()
    states = dict(ongoing.query("SELECT id, state FROM ordersync.runs"))
    assert states == {initial: "running", flush: "failed"}  # the initial run goes on
