"""``ordersync status``: a fresh install, then runs, batches, errors and spent credits."""

from __future__ import annotations

from pipeline.ledger import BatchState, RowError
from pipeline.legacy.names import PENDING_SINCE_COLUMN
from pipeline.settings import Settings
from tests.cli.helpers import add_batch, add_errors, cli_json, query, run_cli
from tests.fixtures.db import LEGACY_BAD_ROWS, LEGACY_ROWS

STATUS_KEYS = {
    "generated_at",
    "table",
    "module",
    "installed",
    "runs",
    "running_run_ids",
    "batches",
    "rows",
    "oldest_pending_age_s",
    "pending_since_unknown",
    "credits",
    "plan",
    "waiting_reason",
}
BATCH_STATES = {s.value for s in BatchState}  # every state, zero when none


def test_status_on_a_fresh_install(legacy_db: Settings) -> None:
    document = cli_json(legacy_db, "status", "--json")
    assert set(document) == STATUS_KEYS
    assert document["installed"] is True
    assert document["table"] == "public.orders" and document["module"] == "Orders"
    assert document["runs"] == [] and document["running_run_ids"] == []
    assert document["batches"] == dict.fromkeys(BATCH_STATES, 0)
    assert document["rows"] == {
        "total": LEGACY_ROWS,
        "pending": LEGACY_ROWS,
        "synced": 0,
        "claimed": 0,
        "in_error": 0,
        "quarantined": 0,
        "sendable": LEGACY_ROWS,
    }
    # the demo rows were there before install: their change time is unknown
    assert document["oldest_pending_age_s"] is None
    assert document["pending_since_unknown"] == LEGACY_ROWS
    assert document["credits"] == {
        "spent_24h": 0,
        "budget": 50_000,
        "reserve": 1_000,
        "left": 49_000,
    }
    # 200 rows: two upsert calls of 100, 10 credits each
    assert document["plan"]["rows"] == LEGACY_ROWS
    assert (document["plan"]["bulk_jobs"], document["plan"]["upsert_calls"]) == (0, 2)
    assert document["plan"]["credits"] == 20
    assert document["waiting_reason"] == ""

    text = run_cli(legacy_db, "status")
    assert text.returncode == 0, text.stderr
    assert "200 pending" in text.stdout and "49,000 left" in text.stdout
    assert "runs       none yet" in text.stdout


def has_pending_since(settings: Settings) -> bool:
    return bool(
        query(
            settings,
            "SELECT 1 FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attname = %s",
            (PENDING_SINCE_COLUMN,),
        )
    )


def test_oldest_pending_age(legacy_db: Settings) -> None:
    if not has_pending_since(legacy_db):
        query(legacy_db, f"ALTER TABLE orders ADD COLUMN {PENDING_SINCE_COLUMN} timestamptz")
    query(
        legacy_db,
        f"UPDATE orders SET {PENDING_SINCE_COLUMN} = now() - interval '2 hours' WHERE id = 7",
    )
    query(
        legacy_db,
        f"UPDATE orders SET synced = true, {PENDING_SINCE_COLUMN} ="
        " now() - interval '5 hours' WHERE id = 8",
    )
    age = cli_json(legacy_db, "status", "--json")["oldest_pending_age_s"]
    assert 7200 <= age < 7300  # the synced row's older time does not count
    query(legacy_db, f"UPDATE orders SET {PENDING_SINCE_COLUMN} = now() WHERE id <> 7")
    document = cli_json(legacy_db, "status", "--json")
    assert document["pending_since_unknown"] == 0
    assert 7200 <= document["oldest_pending_age_s"] < 7300
    assert "oldest pending change   2h00m" in run_cli(legacy_db, "status").stdout
    assert "pending since before install" not in run_cli(legacy_db, "status").stdout


def test_status_counts_runs_batches_errors_and_credits(legacy_db: Settings) -> None:
    run_id = query(legacy_db, "INSERT INTO ordersync.runs (kind) VALUES ('manual') RETURNING id")[
        0
    ][0]
    add_batch(legacy_db, range(1, 51), state="reconciled", run_id=run_id)
    add_batch(legacy_db, range(51, 101), state="uploaded", run_id=run_id)
    query(legacy_db, "UPDATE orders SET synced = true WHERE id <= 50")
    add_errors(
        legacy_db, [RowError("150", "INVALID_DATA", "Email", "bad")], times=1, max_attempts=1
    )
    add_errors(legacy_db, [RowError("160", "RECORD_LOCKED", None, "busy")], times=1)  # goes again
    # 48,705 credits spent in the window: 295 left, enough for the sendable rows
    query(
        legacy_db,
        "INSERT INTO ordersync.credit_ledger (api, credits, outcome) VALUES"
        " ('bulk_write', 48700, 'kept'), ('upsert', 5, 'kept')",
    )
    query(
        legacy_db,
        "INSERT INTO ordersync.credit_ledger (at, api, credits, outcome) VALUES"
        " (now() - interval '25 hours', 'bulk_write', 500, 'kept')",
    )
    document = cli_json(legacy_db, "status", "--json")
    assert document["running_run_ids"] == [run_id]
    (run,) = document["runs"]
    assert (run["id"], run["kind"], run["state"]) == (run_id, "manual", "running")
    assert run["rows_in_batches"] == 100 and run["rows_reconciled"] == 50
    assert run["rows_total"] is None  # a run that did not say
    assert run["batches"]["reconciled"] == 1 and run["batches"]["uploaded"] == 1
    # two extra reconciled batches were written by add_errors
    assert document["batches"]["reconciled"] == 3 and document["batches"]["uploaded"] == 1
    rows = document["rows"]
    assert (rows["synced"], rows["pending"]) == (50, LEGACY_ROWS - 50)
    assert rows["claimed"] == 50  # the uploaded batch
    assert (rows["in_error"], rows["quarantined"]) == (2, 1)
    assert rows["sendable"] == LEGACY_ROWS - 50 - 50 - 1
    assert document["credits"]["spent_24h"] == 48_705  # the 25-hour-old job is outside the window
    assert document["credits"]["left"] == 50_000 - 1_000 - 48_705
    assert document["plan"]["waiting_rows"] == 0


def test_status_says_why_work_waits(legacy_db: Settings) -> None:
    query(
        legacy_db,
        "INSERT INTO ordersync.credit_ledger (api, credits, outcome)"
        " VALUES ('bulk_write', 48995, 'kept')",
    )
    document = cli_json(legacy_db, "status", "--json")
    assert document["credits"]["left"] == 5
    # 5 credits pay for one upsert call of 50 rows; the other 150 wait
    assert document["plan"]["rows"] == 50 and document["plan"]["waiting_rows"] == LEGACY_ROWS - 50
    assert document["waiting_reason"].startswith("credit budget: 5 of 20 credits")
    text = run_cli(legacy_db, "status")
    assert "waiting    credit budget" in text.stdout


def test_status_exit_codes(fresh_db: Settings) -> None:
    result = run_cli(fresh_db, "status", "--json")
    assert result.returncode == 2 and "ordersync db install" in result.stderr
    broken = run_cli(
        fresh_db, "status", env={"ORDERSYNC_SOURCE_DSN": "postgresql://postgres@127.0.0.1:1/x"}
    )
    assert broken.returncode == 1 and broken.stderr.startswith("error:")
    assert LEGACY_BAD_ROWS > 0
