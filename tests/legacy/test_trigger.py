"""The change trigger: only changes Zoho would see make a row pending and bump its version."""

from __future__ import annotations

from pipeline.settings import Settings
from tests.legacy.helpers import query, sync_state


def _all_synced(settings: Settings) -> None:
    query(settings, "UPDATE orders SET synced = true, zoho_id = 'z' || id")


def test_insert_is_pending(legacy_db: Settings) -> None:
    query(
        legacy_db,
        "INSERT INTO orders (id, order_number, synced, sync_version)"
        " VALUES (9001, 'SO-9001', true, 1)",
    )
    assert sync_state(legacy_db, 9001) == (False, 1, None)


def test_sync_column_update_changes_nothing_else(legacy_db: Settings) -> None:
    _all_synced(legacy_db)  # an update of the sync columns only: no version bump
    assert sync_state(legacy_db, 7) == (True, 1, "z7")


def test_mapped_update_makes_pending_and_bumps_version(legacy_db: Settings) -> None:
    _all_synced(legacy_db)
    query(legacy_db, "UPDATE orders SET amount = amount + 1 WHERE id = 7")
    assert sync_state(legacy_db, 7) == (False, 2, "z7")
    query(legacy_db, "UPDATE orders SET notes = 'new note', synced = true WHERE id = 7")
    assert sync_state(legacy_db, 7) == (False, 3, "z7")  # cannot sneak synced back in
    assert sync_state(legacy_db, 8) == (True, 1, "z8")


def test_null_to_value_counts_as_change(legacy_db: Settings) -> None:
    query(legacy_db, "UPDATE orders SET notes = NULL WHERE id = 9")
    _all_synced(legacy_db)
    query(legacy_db, "UPDATE orders SET notes = 'x' WHERE id = 9")
    assert sync_state(legacy_db, 9)[:2] == (False, 3)


def test_unmapped_update_changes_nothing(legacy_db: Settings) -> None:
    _all_synced(legacy_db)
    query(
        legacy_db,
        "UPDATE orders SET updated_at = now(), warehouse_note = 'bin 4',"
        " internal_flags = internal_flags + 1 WHERE id = 7",
    )
    assert sync_state(legacy_db, 7) == (True, 1, "z7")


def test_same_value_update_changes_nothing(legacy_db: Settings) -> None:
    _all_synced(legacy_db)
    query(legacy_db, "UPDATE orders SET status = status, amount = amount, updated_at = now()")
    assert query(
        legacy_db, "SELECT count(*) FROM orders WHERE NOT synced OR sync_version <> 1"
    ) == [(0,)]


def test_pending_since_marks_the_first_change(legacy_db: Settings) -> None:
    query(legacy_db, "UPDATE orders SET synced = true, sync_pending_since = NULL")
    query(legacy_db, "UPDATE orders SET amount = amount + 1 WHERE id IN (7, 8)")
    first = query(legacy_db, "SELECT sync_pending_since FROM orders WHERE id = 7")[0][0]
    assert first is not None
    query(legacy_db, "UPDATE orders SET notes = 'again' WHERE id = 7")  # already pending
    assert query(legacy_db, "SELECT sync_pending_since FROM orders WHERE id = 7")[0][0] == first
    query(legacy_db, "UPDATE orders SET warehouse_note = 'x' WHERE id = 9")  # unmapped
    assert query(legacy_db, "SELECT sync_pending_since FROM orders WHERE id = 9") == [(None,)]
