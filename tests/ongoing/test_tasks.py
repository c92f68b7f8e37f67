"""The ongoing sync through Celery: a real worker and beat, PostgreSQL, zohosim over HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable

from celery import Celery
from celery.schedules import crontab

from pipeline.settings import Settings, SyncMode
from tasks.config import CeleryOptions, create_app
from tasks.schedule import INTERVAL_RUN, REALTIME_CHECK, beat_schedule
from tests.fixtures.celery import BeatProcess, WorkerFactory
from tests.fixtures.sim_settings import sim_env
from tests.ongoing.conftest import MAX_DELAY, Ongoing

CHECK = 0.5  # realtime_check of the worker and beat


def worker_env(ongoing: Ongoing, **sync: str) -> dict[str, str]:
    """ORDERSYNC_* variables that give a worker (or beat) the test's settings."""
    s, z = ongoing.settings, ongoing.settings.zoho
    env = {
        "ORDERSYNC_SOURCE_DSN": s.source.dsn.reveal(),
        **sim_env(ongoing.sim, z.redis_prefix),
        "ORDERSYNC_ZOHO_RETRY_BACKOFF": "0.05",
        "ORDERSYNC_ZOHO_RETRY_BACKOFF_MAX": "0.2",
        "ORDERSYNC_SYNC_REDIS_URL": s.redis_url,
        "ORDERSYNC_SYNC_WORK_DIR": str(s.work_dir),
        "ORDERSYNC_SYNC_REALTIME_MAX_DELAY": str(MAX_DELAY),
        "ORDERSYNC_SYNC_REALTIME_CHECK": str(CHECK),
        "ORDERSYNC_SYNC_MODE": "realtime",
    }
    env.update({f"ORDERSYNC_SYNC_{k.upper()}": v for k, v in sync.items()})
    return env


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> float:
    """Poll until ``predicate()`` is true; returns the time.time() it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.time()
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_beat_schedule_follows_the_mode() -> None:
    realtime = beat_schedule(Settings(mode=SyncMode.REALTIME, realtime_check=15.0))
    assert list(realtime) == [REALTIME_CHECK]
    assert realtime[REALTIME_CHECK]["schedule"] == 15.0
    assert realtime[REALTIME_CHECK]["options"] == {"expires": 15.0}

    interval = beat_schedule(Settings(mode=SyncMode.INTERVAL, interval_crontab="30 2 * * *"))
    assert list(interval) == [INTERVAL_RUN]
    schedule = interval[INTERVAL_RUN]["schedule"]
    assert isinstance(schedule, crontab)
    assert schedule == crontab(minute="30", hour="2")
    assert interval[INTERVAL_RUN]["options"]["expires"] > 0

    assert set(beat_schedule(Settings(mode=SyncMode.BOTH))) == {REALTIME_CHECK, INTERVAL_RUN}


def test_the_app_schedules_the_sweeper_and_the_entries_of_its_mode() -> None:
    app = create_app(Settings(mode=SyncMode.INTERVAL), CeleryOptions(namespace="tschedule"))
    try:
        assert set(app.conf.beat_schedule) == {"ordersync.sweep", INTERVAL_RUN}
    finally:
        app.close()


def test_beat_and_worker_send_255_changes_in_tens_at_once_and_the_last_5_within_max_delay(
    ongoing: Ongoing,
    celery_worker_factory: WorkerFactory,
    celery_beat_factory: Callable[..., BeatProcess],
) -> None:
    env = worker_env(ongoing)
    celery_worker_factory(extra_env=env)
    beat = celery_beat_factory(extra_env=env)

    ongoing.change(range(1, 201))
    ongoing.seed(55, seed=5)  # one transaction: ids 201..255, the same change time

    wait_until(lambda: ongoing.sim_upsert_credits() >= 25, 15, "the whole tens")
    time.sleep(0.3)
    assert ongoing.upsert_sizes() == [100, 100, 50]  # 50 went at once: waiting saves nothing
    assert ongoing.pending() == 5
    wait_until(lambda: ongoing.sim_upsert_credits() == 26, MAX_DELAY + 10, "the last 5")
    assert ongoing.upsert_sizes() == [100, 100, 50, 5]
    (waited,) = ongoing.query(
        "SELECT extract(epoch FROM max(c.at) - (SELECT min(o.sync_pending_since) FROM orders o"
        " WHERE o.id > 250)) FROM ordersync.credit_ledger c WHERE c.api = 'upsert'"
    )[0]
    assert float(waited) >= MAX_DELAY - CHECK  # the last few went only once they were due
    assert ongoing.pending() == 0
    assert len(ongoing.sim_records()) == 255

    changed_at = time.time()
    ongoing.query("UPDATE orders SET notes = 'call first' WHERE id = 123")
    arrived_at = wait_until(
        lambda: ongoing.sim_records()["123"].get("Notes") == "call first",
        MAX_DELAY + 10,
        "the single change in zohosim",
    )
    # within max_delay while checks run on time (+ slack, less than one check, for a busy box)
    assert arrived_at - changed_at <= MAX_DELAY + 0.45
    assert ongoing.sim_upsert_credits() == 27
    assert "ordersync.realtime.check" in beat.log()


def test_interval_run_of_26000_changes_uses_one_bulk_job_and_10_upserts(
    ongoing: Ongoing, celery_worker_factory: WorkerFactory, celery_sender: Celery
) -> None:
    ongoing.change(range(1, 201))
    ongoing.seed(25_800, seed=9)
    assert ongoing.pending() == 26_000
    celery_worker_factory(extra_env=worker_env(ongoing, mode="interval"))

    celery_sender.send_task(INTERVAL_RUN)
    wait_until(lambda: ongoing.pending() == 0, 180, "the interval run and its bulk job")

    credits = ongoing.sim.admin.credits()
    assert credits["calls_by_api"]["bulk_create"] == 1
    assert credits["calls_by_api"]["upsert"] == 10
    assert credits["by_api"]["bulk_create"] + credits["by_api"]["upsert"] == 600
    assert ongoing.upsert_sizes() == [100] * 10
    assert len(ongoing.sim_records()) == 26_000
    ((state, stats),) = ongoing.query("SELECT state, stats FROM ordersync.runs")
    assert state == "done"
    assert stats["plan"]["bulk_jobs"] == 1 and stats["plan"]["upsert_calls"] == 10
    assert stats["plan"]["credits"] == 600
    ((rows, batch_state),) = ongoing.query(
        "SELECT row_count, state FROM ordersync.batches WHERE kind = 'bulk'"
    )
    assert (rows, batch_state) == (25_000, "reconciled")


def test_in_mode_both_a_backlog_cheaper_by_bulk_goes_by_one_bulk_job(
    ongoing: Ongoing,
    celery_worker_factory: WorkerFactory,
    celery_beat_factory: Callable[..., BeatProcess],
) -> None:
    ongoing.change(range(1, 201))
    ongoing.seed(5_800, seed=4)
    env = worker_env(ongoing, mode="both")
    celery_worker_factory(extra_env=env)
    celery_beat_factory(extra_env=env)

    wait_until(lambda: ongoing.pending() == 0, 90, "the backlog")
    credits = ongoing.sim.admin.credits()
    assert credits["calls_by_api"].get("upsert", 0) == 0
    assert credits["calls_by_api"]["bulk_create"] == 1  # 500 credits, not 600 by upsert
    ((kind, stats),) = ongoing.query("SELECT kind, stats FROM ordersync.runs")
    assert kind == "interval" and stats["plan"]["bulk_jobs"] == 1
