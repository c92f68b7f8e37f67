"""``ordersync sync initial`` and ``sync follow`` against the ledger and a real broker.

No worker runs here: the tests play the workers' part in the ledger (runs, batches, stats) and
check what the command shows and how it ends.
"""

from __future__ import annotations

import contextlib
import os
import pty
import re
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from typing import Any

import pytest
from celery import Celery

from pipeline.ledger import RowError, record_row_errors
from pipeline.legacy.connection import connect
from pipeline.settings import Settings
from tasks.config import Queue
from tests.cli.helpers import (
    add_batch,
    add_run,
    cli_env,
    cli_json,
    finish_run,
    query,
    run_cli,
    start_cli,
)
from tests.fixtures.celery import CeleryTestEnv
from tests.fixtures.db import LEGACY_ROWS


def _broker_env(celery_env: CeleryTestEnv) -> dict[str, str]:
    return {k: v for k, v in celery_env.env().items() if k.startswith("ORDERSYNC_")}


def _read_line(proc: subprocess.Popen[str], needle: str, timeout: float = 30) -> list[str]:
    """Lines of ``proc``'s stdout up to the first containing ``needle``.

    A watchdog kills the process after ``timeout`` so a silent process cannot hang the test.
    """
    assert proc.stdout is not None and proc.stderr is not None
    lines: list[str] = []
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    try:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if needle in line:
                return lines
    finally:
        watchdog.cancel()
    raise AssertionError(f"{needle!r} never printed; got {lines}; stderr {proc.stderr.read()}")


def _take_message(app: Celery, queue: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The next message on ``queue``: its headers and kwargs (acknowledged: gone)."""
    with app.connection_for_read() as conn, conn.SimpleQueue(app.amqp.queues[queue]) as q:
        message = q.get(timeout=10)
        args, kwargs, _embed = message.decode()
        message.ack()
        return message.headers, kwargs


def _refuse(
    settings: Settings, batch_id: int, row_key: int, *, max_attempts: int, code: str
) -> None:
    """Record Zoho's refusal of one row of ``batch_id``, as the reconcile step does."""
    conn = connect(settings)
    try:
        with conn:
            record_row_errors(
                conn, replace(settings, max_attempts=max_attempts), batch_id,
                [RowError(str(row_key), code, "Email", "refused")],
            )  # fmt: skip
    finally:
        conn.close()


def test_sync_initial_refuses_while_a_run_is_in_progress(legacy_db: Settings) -> None:
    run_id = add_run(legacy_db, rows_total=LEGACY_ROWS)
    add_batch(legacy_db, range(1, 101), state="uploaded", run_id=run_id)
    result = run_cli(legacy_db, "sync", "initial", "--no-follow")
    assert result.returncode == 3, result.stderr
    assert f"refused: initial run {run_id} is in progress" in result.stderr
    assert f"ordersync sync follow {run_id}" in result.stderr
    assert result.stdout.startswith(f"run {run_id} running: 0 of {LEGACY_ROWS} rows")
    assert "batches: uploaded 1" in result.stdout
    assert query(legacy_db, "SELECT count(*) FROM ordersync.runs")[0][0] == 1
    # the dry run says so too, and still plans
    document = cli_json(legacy_db, "sync", "initial", "--dry-run", "--json")
    assert document["running_run_ids"] == [run_id]
    assert document["rows"]["claimed"] == 100


def test_sync_initial_starts_a_run_and_sends_its_task(
    legacy_db: Settings, celery_env: CeleryTestEnv, celery_sender: Celery
) -> None:
    result = run_cli(legacy_db, "sync", "initial", "--no-follow", env=_broker_env(celery_env))
    assert result.returncode == 0, result.stderr
    ((run_id, kind, state),) = query(legacy_db, "SELECT id, kind, state FROM ordersync.runs")
    assert (kind, state) == ("initial", "running")
    assert (
        result.stdout.splitlines()[0]
        == f"initial run {run_id} started (ordersync.initial.start sent)"
    )
    headers, kwargs = _take_message(celery_sender, celery_env.queue(Queue.DB))
    assert headers["task"] == "ordersync.initial.start"
    assert kwargs == {"run_id": run_id}
    # a second request is refused while the first runs
    again = run_cli(legacy_db, "sync", "initial", "--no-follow", env=_broker_env(celery_env))
    assert again.returncode == 3


def test_sync_initial_without_a_broker_fails_the_run(legacy_db: Settings) -> None:
    result = run_cli(
        legacy_db,
        "sync",
        "initial",
        "--no-follow",
        env={"ORDERSYNC_SYNC_BROKER_URL": "redis://127.0.0.1:1/0"},
    )
    assert result.returncode == 1
    assert "could not send the run to the workers" in result.stderr
    ((state, error),) = query(legacy_db, "SELECT state, error FROM ordersync.runs")
    assert state == "failed" and "ordersync.initial.start" in error
    # so it blocks nothing: the dry run sees no running run
    assert cli_json(legacy_db, "sync", "initial", "--dry-run", "--json")["running_run_ids"] == []


def test_sync_initial_follow_until_done(legacy_db: Settings, celery_env: CeleryTestEnv) -> None:
    proc = start_cli(
        legacy_db, "sync", "initial", "--follow", "--interval", "0.2", env=_broker_env(celery_env)
    )
    try:
        first = _read_line(proc, "started")
        run_id = int(first[-1].split()[2])
        _read_line(proc, f"run {run_id} running: 0 of {LEGACY_ROWS} rows")
        # the workers' part: a batch answered by Zoho, credits charged to the run
        batch = add_batch(legacy_db, range(1, 101), state="reconciled", run_id=run_id)
        query(
            legacy_db,
            'UPDATE ordersync.batches SET stats = \'{"ok": 98, "errors": 2}\' WHERE id = %s',
            (batch,),
        )
        query(
            legacy_db,
            "INSERT INTO ordersync.credit_ledger (api, credits, run_id, outcome)"
            " VALUES ('bulk_write', 500, %s, 'kept')",
            (run_id,),
        )
        # Zoho refused rows 99 and 100: row 100 for the moment (retried: skipped, not done),
        # row 99 for its data (held back: done for this run); recorded in that order so
        # no line in between shows 99 rows done
        _refuse(legacy_db, batch, 100, max_attempts=3, code="LIMIT_EXCEEDED")
        _refuse(legacy_db, batch, 99, max_attempts=3, code="INVALID_DATA")
        line = _read_line(proc, "99 of 200 rows")[-1]
        assert "(49.5%)" in line and "synced 98, skipped 2, held back 1" in line
        assert "batches: reconciled 1 | credits spent 500" in line
        finish_run(legacy_db, run_id)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()  # reaps it and closes its pipes, also when an assertion failed
    assert proc.returncode == 0, err
    assert out.rstrip().endswith(f"run {run_id} done")
    assert "\x1b[" not in out  # not a terminal: plain lines only


@pytest.mark.parametrize("ending", ["failed", "interrupt"])
def test_sync_follow_a_failed_or_interrupted_run(legacy_db: Settings, ending: str) -> None:
    run_id = add_run(legacy_db, rows_total=LEGACY_ROWS)
    proc = start_cli(legacy_db, "sync", "follow", "--interval", "0.2")
    try:
        _read_line(proc, f"run {run_id} running")
        if ending == "failed":
            query(
                legacy_db,
                "UPDATE ordersync.runs SET error = 'job FAILED twice' WHERE id = %s",
                (run_id,),
            )
            finish_run(legacy_db, run_id, "failed")
        else:
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()  # reaps it and closes its pipes, also when an assertion failed
    if ending == "failed":
        assert proc.returncode == 4, err
        assert out.rstrip().endswith(f"run {run_id} ended failed: job FAILED twice")
    else:
        assert proc.returncode == 130, err
        assert f"stopped following; run {run_id} goes on" in out
        # Ctrl-C stops watching, not the run
        assert query(legacy_db, "SELECT state FROM ordersync.runs WHERE id = %s", (run_id,)) == [
            ("running",)
        ]


def test_sync_follow_with_nothing_running(legacy_db: Settings) -> None:
    result = run_cli(legacy_db, "sync", "follow")
    assert result.returncode == 1 and "no run is in progress" in result.stderr


def test_on_a_terminal_follow_is_the_default_and_redraws_in_place(
    legacy_db: Settings, celery_env: CeleryTestEnv
) -> None:
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "sync", "initial", "--interval", "0.2"],
        env=cli_env(legacy_db, _broker_env(celery_env)),
        cwd=legacy_db.work_dir.parent,
        stdout=secondary,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(secondary)
    seen = ""
    try:
        deadline = time.monotonic() + 30
        redraw = re.compile(r"\x1b\[[23]F\x1b\[J")  # up the 2 or 3 lines drawn, clear to the end
        while not redraw.search(seen) and time.monotonic() < deadline:
            if select.select([primary], [], [], 0.5)[0]:
                seen += os.read(primary, 4096).decode()
        assert redraw.search(seen), seen  # a redraw: up the lines, clear, draw again
        ((run_id,),) = query(legacy_db, "SELECT id FROM ordersync.runs")
        finish_run(legacy_db, run_id)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        with contextlib.suppress(OSError):  # EIO once the child's side is closed
            while select.select([primary], [], [], 0.5)[0]:
                chunk = os.read(primary, 4096).decode()
                if not chunk:
                    break
                seen += chunk
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()  # reaps it and closes its pipes, also when an assertion failed
        os.close(primary)
    assert f"run {run_id} done" in seen
