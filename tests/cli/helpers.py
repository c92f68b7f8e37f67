"""Run the ``ordersync`` CLI as a subprocess against a test database; seed the ledger."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from pipeline.ledger import RowError, record_row_errors
from pipeline.legacy.connection import connect
from pipeline.settings import Settings
from tests.fixtures.services import query  # re-exported for the CLI tests

REPO_ROOT = Path(__file__).resolve().parents[2]


def cli_env(settings: Settings, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a CLI subprocess: the test database, no other ORDERSYNC_* setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERSYNC_")}
    env.update(
        {
            "ORDERSYNC_SOURCE_DSN": settings.source.dsn.reveal(),
            "ORDERSYNC_SYNC_WORK_DIR": str(settings.work_dir),
            "PYTHONPATH": str(REPO_ROOT),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra or {})
    return env


def run_cli(
    settings: Settings,
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """``python -m cli.main <args>`` with the test database's settings; never raises on exit."""
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        env=cli_env(settings, env),
        cwd=cwd or settings.work_dir.parent,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def cli_json(settings: Settings, *args: str, env: Mapping[str, str] | None = None) -> Any:
    """Run a ``--json`` command that must succeed; its parsed output."""
    result = run_cli(settings, *args, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def add_batch(
    settings: Settings,
    keys: Iterable[int],
    *,
    state: str = "job_done",
    run_id: int | None = None,
    row_count: int | None = None,
) -> int:
    """A bulk batch in the ledger claiming ``keys`` at their current versions; its id."""
    keys = list(keys)
    versions = dict(
        query(settings, "SELECT id, sync_version FROM orders WHERE id = ANY(%s)", (keys,))
    )
    rows = query(
        settings,
        "INSERT INTO ordersync.batches (run_id, kind, state, row_count, keys, versions,"
        " key_lo, key_hi) VALUES (%s, 'bulk', %s, %s, %s, %s, %s, %s) RETURNING id",
        (
            run_id,
            state,
            len(keys) if row_count is None else row_count,
            [str(k) for k in keys],
            [versions[k] for k in keys],
            str(min(keys)) if keys else None,
            str(max(keys)) if keys else None,
        ),
    )
    return int(rows[0][0])


def add_errors(
    settings: Settings, errors: Iterable[RowError], *, times: int = 1, max_attempts: int = 3
) -> None:
    """Record ``errors`` as Zoho's answer to ``times`` successive batches of those rows."""
    errors = list(errors)
    recording = replace(settings, max_attempts=max_attempts)
    for _ in range(times):
        batch = add_batch(settings, [int(e.row_key) for e in errors], state="reconciled")
        conn = connect(settings)
        try:
            with conn:
                record_row_errors(conn, recording, batch, errors)
        finally:
            conn.close()


def start_cli(
    settings: Settings, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.Popen[str]:
    """Start ``python -m cli.main <args>`` in the background (stdout piped, line-buffered)."""
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", *args],
        env=cli_env(settings, env),
        cwd=settings.work_dir.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )


def add_run(settings: Settings, *, kind: str = "initial", rows_total: int | None = None) -> int:
    """A running run in the ledger; its id."""
    stats = "{}" if rows_total is None else json.dumps({"rows_total": rows_total})
    rows = query(
        settings,
        "INSERT INTO ordersync.runs (kind, stats) VALUES (%s, %s::jsonb) RETURNING id",
        (kind, stats),
    )
    return int(rows[0][0])


def finish_run(settings: Settings, run_id: int, state: str = "done") -> None:
    """End a run as the workers would."""
    query(
        settings,
        "UPDATE ordersync.runs SET state = %s, finished_at = now(), updated_at = now()"
        " WHERE id = %s",
        (state, run_id),
    )
