"""Faster change detection (``sync.notify``): the change trigger NOTIFYs, ``ordersync listen``
wakes the flush. Real PostgreSQL, a real worker, zohosim over HTTP; off by default."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path

import psycopg2
import pytest
from psycopg2.extensions import connection as Connection

from pipeline.legacy import schema
from pipeline.legacy.connection import connect
from pipeline.legacy.names import Names
from pipeline.notify import Debounce, Listener
from pipeline.settings import Settings
from tests.fixtures.celery import REPO_ROOT, CeleryTestEnv, WorkerFactory
from tests.ongoing.conftest import Ongoing
from tests.ongoing.test_tasks import wait_until, worker_env


@contextmanager
def listening(settings: Settings) -> Iterator[Connection]:
    conn = connect(settings, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(f'LISTEN "{Names(settings).notify_channel}"')
        yield conn
    finally:
        conn.close()


def notifications(conn: Connection, wait: float = 0.5) -> int:
    """Notifications that arrive on ``conn`` within ``wait`` seconds."""
    got, deadline = 0, time.monotonic() + wait
    while (left := deadline - time.monotonic()) > 0:
        if select.select([conn], [], [], left)[0]:
            conn.poll()
            got += len(conn.notifies)
            conn.notifies.clear()
    return got


def has_note(ongoing: Ongoing, order_id: int, note: str) -> bool:
    return ongoing.sim_records().get(str(order_id), {}).get("Notes") == note


def with_notify(ongoing: Ongoing) -> Settings:
    settings = replace(ongoing.settings, notify=True)
    assert "triggers" in schema.install(settings)
    assert schema.notify_installed(settings)
    report = schema.status(settings)
    assert report["trigger_notifies"] and report["trigger_current"]
    assert not schema.status(ongoing.settings)["trigger_current"]  # notify off: install again
    return settings


def test_off_by_default_the_trigger_does_not_notify(ongoing: Ongoing) -> None:
    assert Settings().notify is False
    assert not any("pg_notify" in str(s) for s in schema.trigger_statements(ongoing.settings))
    assert not schema.notify_installed(ongoing.settings)
    with listening(ongoing.settings) as conn:
        ongoing.change(range(1, 11))
        assert notifications(conn) == 0


def test_a_commit_of_mapped_changes_notifies_once_a_rollback_or_unmapped_change_never(
    ongoing: Ongoing,
) -> None:
    settings = with_notify(ongoing)
    with listening(settings) as conn:
        ongoing.change(range(1, 51))  # 50 rows, one transaction: folded into one notification
        assert notifications(conn) == 1
        writer = connect(settings)
        with writer.cursor() as cur:
            cur.execute("UPDATE orders SET status = 'Refunded' WHERE id = 60")
        writer.rollback()
        writer.close()
        ongoing.query("UPDATE orders SET synced = synced WHERE id = 61")  # no mapped change
        assert notifications(conn) == 0
        ongoing.seed(3, seed=3)  # inserts notify too
        assert notifications(conn) == 1


def test_debounce_wakes_at_once_then_at_most_once_per_interval() -> None:
    d = Debounce(0.2)
    assert d.wait(0.0, 1.0) == 1.0 and not d.due(0.0)
    d.notified()
    assert d.due(0.0)  # the first notification: at once
    d.notified()
    assert d.wait(0.05, 1.0) == pytest.approx(0.15) and not d.due(0.05)
    d.notified()
    assert d.due(0.2) and not d.due(0.21)  # the burst: one wake at the interval's end


def test_ordersync_listen_wakes_a_flush_within_a_second_of_a_change(
    ongoing: Ongoing, celery_env: CeleryTestEnv, celery_worker_factory: WorkerFactory,
    tmp_path: Path,
) -> None:  # fmt: skip
    with_notify(ongoing)
    # the defaults: a periodic check every 30 s, max_delay 600 s (no beat: only the listener)
    env = worker_env(ongoing, realtime_check="30", realtime_max_delay="600", notify="true")
    celery_worker_factory(extra_env=env)
    listen_env = celery_env.env(**env, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "listen"], env=listen_env, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_until(lambda: ongoing.query(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ordersync-listen'"
            " AND query LIKE 'LISTEN%%'")[0][0], 20, "the listener")  # fmt: skip
        latencies = []
        for i in range(3):
            changed = time.time()
            ongoing.query("UPDATE orders SET notes = %s WHERE id = %s", (f"note {i}", 10 + i))
            arrived = wait_until(partial(has_note, ongoing, 10 + i, f"note {i}"), 10,
                                 f"change {i} in zohosim")  # fmt: skip
            latencies.append(arrived - changed)
            time.sleep(0.5)
        print("notify latencies", [round(x, 2) for x in latencies])
        assert max(latencies) <= 1.5, latencies
        assert ongoing.pending() == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, out
    assert "listening on ordersync_pending" in out


def test_ordersync_listen_refuses_to_start_when_notify_is_off(
    ongoing: Ongoing, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERSYNC_")}
    env.update(worker_env(ongoing), PYTHONPATH=str(REPO_ROOT))
    off = subprocess.run([sys.executable, "-m", "cli.main", "listen"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert off.returncode == 2
    assert "notify is off" in off.stderr
    env["ORDERSYNC_SYNC_NOTIFY"] = "true"  # on, but the installed trigger does not notify yet
    stale = subprocess.run([sys.executable, "-m", "cli.main", "listen"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert stale.returncode == 2
    assert "db install" in stale.stderr


def test_the_listener_reconnects_and_any_payload_only_wakes(ongoing: Ongoing) -> None:
    settings = with_notify(ongoing)
    listener = Listener(settings, wake=lambda: None, debounce=0.05, tick=0.1)
    stop = threading.Event()
    thread = threading.Thread(target=listener.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_until(lambda: listener.wakes >= 1, 10, "the wake at connect")
        channel = Names(settings).notify_channel
        for payload in ("garbage", "\u00e9\u0001{not json", "x" * 7000):
            ongoing.query("SELECT pg_notify(%s, %s)", (channel, payload))
        wait_until(lambda: listener.notifications == 3, 10, "the garbage notifications")
        assert thread.is_alive()

        ongoing.query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'ordersync-listen' AND datname = current_database()"
        )
        wait_until(lambda: listener.reconnects == 1, 10, "the reconnection")
        wait_until(lambda: ongoing.query(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ordersync-listen'"
            " AND datname = current_database()")[0][0], 10, "a new connection")  # fmt: skip
        wakes = listener.wakes
        ongoing.change([5])
        wait_until(lambda: listener.wakes > wakes, 10, "a wake after the reconnection")
    finally:
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()


def test_a_listener_that_cannot_connect_keeps_trying(ongoing: Ongoing) -> None:
    broken = replace(ongoing.settings, source=replace(
        ongoing.settings.source, dsn=type(ongoing.settings.source.dsn)(
            "postgresql://root@127.0.0.1:1/none")))  # fmt: skip
    listener = Listener(broken, wake=lambda: None)
    stop = threading.Event()
    thread = threading.Thread(target=listener.run, args=(stop,), daemon=True)
    thread.start()
    time.sleep(1.0)
    assert thread.is_alive() and listener.wakes == 0
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()
    with pytest.raises(psycopg2.OperationalError):
        connect(broken)
