"""``ordersync errors`` lists Zoho's refusals; ``ordersync retry`` puts the rows back in play."""

from __future__ import annotations

from pipeline.ledger import RowError
from pipeline.settings import Settings
from tests.cli.helpers import add_errors, cli_json, query, run_cli

ERROR_KEYS = {
    "row_key",
    "code",
    "field",
    "message",
    "attempts",
    "quarantined",
    "version",
    "current_version",
    "batch_id",
    "first_seen",
    "last_seen",
}


def _seed_errors(settings: Settings) -> None:
    """Rows 18 and 118 held back (a permanent code: at once), 68 and 43 refused once for a
    reason of the moment (not held)."""
    add_errors(
        settings,
        [
            RowError("18", "INVALID_DATA", "Order_Status", "invalid data"),
            RowError("118", "INVALID_DATA", "Order_Status", "invalid data"),
        ],
    )
    add_errors(
        settings,
        [
            RowError("68", "LIMIT_EXCEEDED", "Email", "limit exceeded"),
            RowError("43", "RECORD_LOCKED", "Name", "record locked"),
        ],
    )


def test_errors_lists_and_filters(legacy_db: Settings) -> None:
    empty = cli_json(legacy_db, "errors", "--json")
    assert empty == {"total": 0, "by_code": {}, "shown": 0, "errors": []}
    assert run_cli(legacy_db, "errors").stdout.strip() == "no row errors"

    _seed_errors(legacy_db)
    document = cli_json(legacy_db, "errors", "--json")
    assert document["total"] == 4 and document["shown"] == 4
    assert document["by_code"] == {"INVALID_DATA": 2, "LIMIT_EXCEEDED": 1, "RECORD_LOCKED": 1}
    assert all(set(e) == ERROR_KEYS for e in document["errors"])
    # held-back rows first
    assert [e["quarantined"] for e in document["errors"]] == [True, True, False, False]
    by_key = {e["row_key"]: e for e in document["errors"]}
    assert by_key["18"]["attempts"] == 1 and by_key["18"]["field"] == "Order_Status"
    assert by_key["43"] | {"first_seen": None, "last_seen": None, "batch_id": None} == {
        "row_key": "43",
        "code": "RECORD_LOCKED",
        "field": "Name",
        "message": "record locked",
        "attempts": 1,
        "quarantined": False,
        "version": 1,
        "current_version": 1,
        "batch_id": None,
        "first_seen": None,
        "last_seen": None,
    }

    only = cli_json(legacy_db, "errors", "--code", "RECORD_LOCKED", "--json")
    assert [e["row_key"] for e in only["errors"]] == ["43"] and only["total"] == 1
    held = cli_json(legacy_db, "errors", "--quarantined", "--json")
    assert sorted(e["row_key"] for e in held["errors"]) == ["118", "18"]
    limited = cli_json(legacy_db, "errors", "--limit", "1", "--json")
    assert (limited["total"], limited["shown"], len(limited["errors"])) == (4, 1, 1)

    text = run_cli(legacy_db, "errors", "--limit", "3")
    assert text.returncode == 0
    assert "4 row error(s): INVALID_DATA 2, LIMIT_EXCEEDED 1, RECORD_LOCKED 1" in text.stdout
    assert "1 more (use --limit)" in text.stdout

    # editing a quarantined row lifts its quarantine by itself
    query(legacy_db, "UPDATE orders SET status = 'Paid' WHERE id = 18")
    held = cli_json(legacy_db, "errors", "--quarantined", "--json")
    assert [e["row_key"] for e in held["errors"]] == ["118"]


def test_retry_resets_attempts_and_lifts_quarantine(legacy_db: Settings) -> None:
    _seed_errors(legacy_db)
    query(legacy_db, "UPDATE orders SET synced = true WHERE id = 68")  # should not happen; heal it
    versions_before = query(legacy_db, "SELECT id, sync_version FROM orders ORDER BY id")

    result = run_cli(legacy_db, "retry", "--code", "RECORD_LOCKED")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("retried 1 row(s)")
    document = cli_json(legacy_db, "retry", "--json")  # not quarantined: 43 again, and 68
    assert document == {"retried": 2, "unquarantined": 0, "made_pending": 1}
    errors = {e["row_key"]: e for e in cli_json(legacy_db, "errors", "--json")["errors"]}
    assert errors["43"]["attempts"] == 0 and errors["68"]["attempts"] == 0
    assert errors["18"]["attempts"] == 1 and errors["18"]["quarantined"]
    assert query(legacy_db, "SELECT synced FROM orders WHERE id = 68") == [(False,)]

    released = cli_json(legacy_db, "retry", "--force", "--json")
    assert released == {"retried": 4, "unquarantined": 2, "made_pending": 0}
    after = cli_json(legacy_db, "errors", "--json")
    assert after["total"] == 4  # the errors stay visible until the rows sync
    assert all(e["attempts"] == 0 and not e["quarantined"] for e in after["errors"])
    status = cli_json(legacy_db, "status", "--json")
    assert status["rows"]["quarantined"] == 0 and status["rows"]["sendable"] == 200
    # nothing about the rows' data changed: no version moved
    assert query(legacy_db, "SELECT id, sync_version FROM orders ORDER BY id") == versions_before


def test_errors_and_retry_need_an_install(fresh_db: Settings) -> None:
    for command in (["errors"], ["retry"]):
        result = run_cli(fresh_db, *command)
        assert result.returncode == 2 and "ordersync db install" in result.stderr
