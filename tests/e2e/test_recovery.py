"""The initial sync survives a worker killed in each step, a FAILED job, a 429 storm, an
expired token: the run completes, no row is lost, nothing is done twice."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg2
import pytest

from pipeline.initial_sync import BATCH_LOCK_CLASS, BULK_STEPS, Step
from pipeline.legacy.connection import connect
from tests.e2e.conftest import E2E, MakeE2E, wait_until

# Two bulk batches: a batch of 5,000 rows is the smallest that the planner sends as a bulk job
# (500 credits, as much as its 50 upsert calls; ties go to fewer calls).
ROWS, BATCH = 10_000, 5_000
STALL = 4.0  # seconds a Zoho call hangs in zohosim while the worker is killed


@contextmanager
def held(conn_sql: str, settings: object) -> Iterator[None]:
    """Hold a PostgreSQL lock (``conn_sql``) in a transaction of the test's own."""
    conn = connect(settings)  # type: ignore[arg-type]
    try:
        with conn.cursor() as cur:
            cur.execute(conn_sql)
        yield
    finally:
        conn.rollback()
        conn.close()


def lock_waiters(world: E2E, locktype: str) -> int:
    rows = world.query(
        "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = %s", (locktype,)
    )
    return int(rows[0][0])


def in_zoho_call(world: E2E, batch_state: str) -> Callable[[], bool]:
    return lambda: world.batch_state(1) == batch_state and world.sim.admin.in_flight() > 0


@pytest.mark.parametrize("step", BULK_STEPS)
def test_worker_killed_during_each_step_loses_nothing_and_repeats_nothing(
    make_e2e: MakeE2E, step: Step
) -> None:
    world = make_e2e(rows=ROWS, batch_size=BATCH, in_flight=1, callback=True)
    worker = world.workers[0]
    sim = world.sim.admin
    lock_sql = {
        Step.EXTRACT: "LOCK TABLE ordersync.claim_lock IN ACCESS EXCLUSIVE MODE",
        Step.RENDER: f"SELECT pg_advisory_lock({BATCH_LOCK_CLASS}, 1)",
    }
    if step in lock_sql:
        with held(lock_sql[step], world.settings):
            run_id = world.start_run()
            kind = "relation" if step is Step.EXTRACT else "advisory"
            wait_until(lambda: lock_waiters(world, kind), 30, f"{step} waiting on our lock")
            worker.kill()
    else:
        api, state = {
            Step.UPLOAD: ("upload", "rendered"),
            Step.CREATE_JOB: ("bulk_create", "uploaded"),
            Step.POLL: ("bulk_get", "job_created"),
            Step.RECONCILE: ("download", "job_done"),
        }[step]
        sim.fault(api, "stall", count=1, seconds=STALL)
        run_id = world.start_run()
        wait_until(in_zoho_call(world, state), 30, f"{step} stalled in zohosim")
        worker.kill()
    assert not worker.alive()
    world.start_worker()
    wait_until(lambda: sim.in_flight() == 0, STALL + 10, "the stalled call to end")
    world.sweep()
    progress = world.wait_done(run_id, timeout=90)

    assert progress["state"] == "done"
    assert world.unsynced() == 0
    world.assert_zoho_holds_legacy()  # every row, once, with its latest values
    # an upload killed in flight reached zohosim: that orphan file is sent again (0 credits)
    assert world.calls("upload") == ROWS // BATCH + (1 if step is Step.UPLOAD else 0)
    assert world.calls("bulk_create") == ROWS // BATCH  # no job created twice
    assert sim.credits()["by_api"]["bulk_create"] == ROWS // BATCH * 500
    assert progress["batches"] == {"reconciled": ROWS // BATCH}


def test_a_failed_job_is_retried_with_a_new_upload(make_e2e: MakeE2E) -> None:
    world = make_e2e(rows=ROWS, batch_size=BATCH, in_flight=1)
    world.sim.admin.fail_next_job()
    progress = world.wait_done(world.start_run())

    assert progress["state"] == "done"
    world.assert_zoho_holds_legacy()
    first = world.batches()[0]
    assert first[3] == 1 and "FAILED" in first[5]  # attempts, error
    assert world.calls("bulk_create") == 3
    assert world.calls("upload") == 3


def test_a_429_storm_is_survived(make_e2e: MakeE2E) -> None:
    world = make_e2e(rows=ROWS, batch_size=BATCH, in_flight=1)
    world.sim.admin.configure(job_rows_per_second=20_000)
    run_id = world.start_run()
    # once a token is held (a 429 from the token endpoint means "no refresh for 10 minutes"),
    # every call Zoho gets is refused for a while: the client and the task retries ride it out
    wait_until(lambda: world.batch_state(1) == "job_created", 30, "batch 1's job")
    world.sim.admin.fault("*", "429", count=12)
    progress = world.wait_done(run_id, timeout=120)

    assert progress["state"] == "done"
    world.assert_zoho_holds_legacy()
    assert _refused(world) == 12
    assert world.calls("bulk_create") - _refused(world, "bulk_create") == ROWS // BATCH


def _refused(world: E2E, api: str | None = None) -> int:
    return sum(
        1
        for r in world.sim.admin.requests()["requests"]
        if (api is None or r["api"] == api) and r["status"] == 429
    )


def test_an_expired_token_during_the_run_is_survived(make_e2e: MakeE2E) -> None:
    world = make_e2e(rows=ROWS, batch_size=BATCH, in_flight=1)
    world.sim.admin.configure(job_rows_per_second=10_000)
    run_id = world.start_run()
    wait_until(lambda: world.batch_state(1) == "job_created", 30, "batch 1's job")
    world.sim.admin.invalidate_tokens()
    progress = world.wait_done(run_id)

    assert progress["state"] == "done"
    world.assert_zoho_holds_legacy()
    assert world.calls("bulk_create") == ROWS // BATCH


def test_stalled_batches_name_the_step_their_state_calls_for(make_e2e: MakeE2E) -> None:
    world = make_e2e(rows=BATCH, batch_size=BATCH, workers=0)
    conn = connect(world.settings)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("INSERT INTO ordersync.runs (kind) VALUES ('initial') RETURNING id")
            (run_id,) = cur.fetchone()  # type: ignore[misc]
    finally:
        conn.close()
    from pipeline import initial_sync

    conn = connect(world.settings)
    try:
        outcome = initial_sync.extract(conn, world.settings, run_id)
    finally:
        conn.close()
    assert outcome.next_step is Step.RENDER and outcome.batch_id == 1
    assert initial_sync.stalled_batches(world.settings, 3600) == []
    assert initial_sync.stalled_batches(world.settings, 0) == [(1, Step.RENDER)]
    world.query("UPDATE ordersync.batches SET state = 'job_done'")
    assert initial_sync.stalled_batches(world.settings, 0) == [(1, Step.RECONCILE)]
    assert initial_sync.stalled_runs(world.settings, 0) == [run_id]  # window of 3 has room
    with pytest.raises(psycopg2.errors.UniqueViolation):
        world.query("INSERT INTO ordersync.runs (kind) VALUES ('initial')")
