"""Extraction, rendering, version-checked marking, row errors and quarantine, on real PostgreSQL."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import threading
import zipfile
from pathlib import Path
from typing import Any

import pytest

from pipeline import ledger
from pipeline.demo import bad_row_ids
from pipeline.ledger import BatchState, RowError, record_row_errors
from pipeline.legacy import render, schema
from pipeline.legacy.connection import connect
from pipeline.legacy.extract import claim_realtime, extract_bulk
from pipeline.legacy.mark import list_row_errors, mark_synced
from pipeline.serialize import json_record
from pipeline.settings import Settings
from pipeline.zoho.codes import VALIDATION_CODE
from tests.fixtures.db import LEGACY_BAD_ROWS, LEGACY_ROWS
from tests.legacy.helpers import query, sync_state

# The fixture's rows that break a field rule (row 18: a status Zoho's picklist lacks).
BAD = frozenset(bad_row_ids(1, LEGACY_ROWS, LEGACY_BAD_ROWS, 42))


def _with(settings: Settings, **changes: object) -> Settings:
    return dataclasses.replace(settings, **changes)  # type: ignore[arg-type]


def _csv_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        assert len(names) == 1
        text = archive.read(names[0]).decode("utf-8")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    return rows[0], rows[1:]


def _keys(settings: Settings, batch_id: int) -> list[int]:
    conn = connect(settings)
    try:
        return [int(k) for k, _ in ledger.batch_claims(conn, settings, batch_id)]
    finally:
        conn.close()


def _finish(settings: Settings, batch_id: int) -> None:
    conn = connect(settings)
    try:
        with conn:
            assert ledger.finish_batch(conn, settings, batch_id)
    finally:
        conn.close()


def test_render_zip_header_rows_checksum(legacy_db: Settings) -> None:
    settings = _with(legacy_db, batch_size=50)
    conn = connect(settings)
    batch = render.extract_batch(conn, settings)
    assert batch is not None
    assert batch.row_count == 50
    assert batch.checksum == hashlib.sha256(batch.path.read_bytes()).hexdigest()
    assert batch.zip_bytes == batch.path.stat().st_size
    with zipfile.ZipFile(batch.path) as archive:
        assert archive.namelist() == [f"batch-{batch.batch_id:08d}.csv"]
    header, rows = _csv_rows(batch.path)
    assert header == list(settings.mapping.api_names) and header[0] == "parent_id"
    good = [k for k in range(1, 53) if k not in BAD]  # the first 50 rows that pass the rules
    assert {18, 43} <= BAD and len(good) == 50
    assert [int(r[0]) for r in rows] == good
    assert all(len(r) == len(header) for r in rows)
    stored = ledger.get_batch(conn, settings, batch.batch_id)
    conn.close()
    assert stored is not None and stored.state is BatchState.EXTRACTED
    assert (stored.row_count, stored.checksum, stored.zip_path) == (
        50,
        batch.checksum,
        str(batch.path),
    )
    assert (stored.key_lo, stored.key_hi) == ("1", "52")
    assert _keys(settings, batch.batch_id) == good
    assert list(settings.work_dir.iterdir()) == [batch.path]  # no partial files left
    # the row passed over is held back with the rule it breaks and its value's shape only
    held = query(
        settings,
        "SELECT row_key, code, field, message, quarantined FROM ordersync.row_errors"
        " ORDER BY row_key::int",
    )
    assert [(k, c, f, q) for k, c, f, _, q in held] == [
        ("18", VALIDATION_CODE, "Order_Status", True),
        ("43", VALIDATION_CODE, "Name", True),
    ]
    message = held[0][3]
    assert (
        "Order_Status: picklist (one of " in message and '"Aaaa aa aaaaaaa" (15 chars)' in message
    )
    assert "Lost in transit" not in message


def test_claimed_rows_are_not_extracted_again(legacy_db: Settings) -> None:
    settings = _with(legacy_db, batch_size=60)
    conn = connect(settings)
    sizes = []
    while (batch := render.extract_batch(conn, settings)) is not None:
        sizes.append(batch.row_count)
    conn.close()
    assert sizes == [60, 60, 60, 20 - len(BAD)]  # rows that break a rule are not claimed
    assert query(settings, "SELECT count(*) FROM ordersync.batches") == [(4,)]  # none empty


def test_two_concurrent_extractors_never_share_a_row(legacy_db: Settings) -> None:
    settings = _with(legacy_db, batch_size=7)
    start = threading.Barrier(2)
    got: dict[int, list[int]] = {0: [], 1: []}
    failures: list[BaseException] = []

    def work(slot: int) -> None:
        try:
            conn = connect(settings)
            start.wait()
            while (batch := render.extract_batch(conn, settings)) is not None:
                _, rows = _csv_rows(batch.path)
                keys = [int(r[0]) for r in rows]
                assert keys == _keys(settings, batch.batch_id)
                got[slot].extend(keys)
            conn.close()
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not failures
    assert got[0] and got[1]  # both did work
    assert not set(got[0]) & set(got[1])
    assert sorted(got[0] + got[1]) == [k for k in range(1, 201) if k not in BAD]


def test_row_changed_in_flight_stays_pending(legacy_db: Settings) -> None:
    settings = _with(legacy_db, batch_size=10)
    conn = connect(settings)
    first = render.extract_batch(conn, settings)
    assert first is not None
    query(settings, "UPDATE orders SET amount = amount + 1 WHERE id = 3")
    # in flight: row 3 lies in the open batch's range and is not taken again
    second = render.extract_batch(conn, settings, limit=5)
    assert second is not None and _keys(settings, second.batch_id) == [11, 12, 13, 14, 15]
    with conn:
        result = mark_synced(
            conn, settings, first.batch_id, [(str(k), f"z{k}") for k in range(1, 11)]
        )
        assert ledger.finish_batch(conn, settings, first.batch_id)
    assert (result.marked, result.stale, result.unknown) == (9, 1, 0)
    assert sync_state(settings, 3) == (False, 2, None)
    assert sync_state(settings, 4) == (True, 1, "z4")
    _finish(settings, second.batch_id)
    # once the batch is finished, the changed row goes out with its new version
    third = render.extract_batch(conn, settings, limit=3)
    assert third is not None
    assert ledger.batch_claims(conn, settings, third.batch_id) == [("3", 2), ("11", 1), ("12", 1)]
    conn.rollback()
    conn.close()


def test_mark_is_one_version_checked_statement_and_idempotent(legacy_db: Settings) -> None:
    settings = _with(legacy_db, batch_size=20)
    conn = connect(settings)
    batch = render.extract_batch(conn, settings)
    assert batch is not None
    keys = _keys(settings, batch.batch_id)
    assert keys == [k for k in range(1, 22) if k not in BAD]
    outcomes = [(str(k), f"z{k}") for k in keys] + [("999", "zx")]
    with conn:
        first = mark_synced(conn, settings, batch.batch_id, outcomes)
    with conn:
        again = mark_synced(conn, settings, batch.batch_id, outcomes)
    conn.close()
    assert (first.marked, first.stale, first.unknown) == (20, 0, 1)
    assert again.marked == 20 and again.stale == 0
    assert query(settings, "SELECT count(*) FROM orders WHERE synced") == [(20,)]
    assert sync_state(settings, 21) == (True, 1, "z21")


def test_quarantine_after_max_attempts_and_release_on_change(legacy_db: Settings) -> None:
    """A code the table does not know counts towards ``max_attempts``."""
    settings = _with(legacy_db, batch_size=5, max_attempts=2)
    bad = RowError("2", "SOMETHING_NEW", "Email", "invalid email")
    conn = connect(settings)

    def attempt() -> list[int]:
        batch = render.extract_batch(conn, settings)
        assert batch is not None
        keys = _keys(settings, batch.batch_id)
        with conn:
            if 2 in keys:
                result = record_row_errors(conn, settings, batch.batch_id, [bad])
                assert record_row_errors(conn, settings, batch.batch_id, [bad]) == result
            ledger.finish_batch(conn, settings, batch.batch_id, BatchState.FAILED, "test")
        return keys

    assert attempt() == [1, 2, 3, 4, 5]
    errors = list_row_errors(conn, settings)
    conn.rollback()
    assert [(e.row_key, e.attempts, e.quarantined, e.field) for e in errors] == [
        ("2", 1, False, "Email")
    ]
    assert 2 in attempt()
    errors = list_row_errors(conn, settings, quarantined_only=True)
    conn.rollback()
    assert [(e.row_key, e.attempts, e.quarantined) for e in errors] == [("2", 2, True)]
    assert attempt() == [1, 3, 4, 5, 6]  # held back
    counts = schema.status(settings)["counts"]
    assert (counts["quarantined"], counts["row_errors"]) == (1, 1)
    query(settings, "UPDATE orders SET customer_email = 'fixed@example.com' WHERE id = 2")
    assert attempt() == [1, 2, 3, 4, 5]  # the edit lifted the quarantine
    assert list_row_errors(conn, settings, quarantined_only=True) == []
    conn.rollback()
    conn.close()


def test_a_permanent_refusal_holds_the_row_until_it_changes(legacy_db: Settings) -> None:
    settings = _with(legacy_db, batch_size=5, max_attempts=3)
    conn = connect(settings)
    batch = render.extract_batch(conn, settings)
    assert batch is not None and _keys(settings, batch.batch_id) == [1, 2, 3, 4, 5]
    with conn:
        refused = [RowError("2", "INVALID_DATA", "Email", "invalid"),
                   RowError("3", "LIMIT_EXCEEDED", None, "busy")]  # fmt: skip
        result = record_row_errors(conn, settings, batch.batch_id, refused)
        ledger.finish_batch(conn, settings, batch.batch_id, BatchState.FAILED, "test")
    assert result.quarantined == 1  # the first refusal of bad data holds it; busy goes again
    again = render.extract_batch(conn, settings)
    assert again is not None and _keys(settings, again.batch_id) == [1, 3, 4, 5, 6]
    _finish(settings, again.batch_id)
    query(settings, "UPDATE orders SET customer_email = 'fixed@example.com' WHERE id = 2")
    third = render.extract_batch(conn, settings)
    assert third is not None and _keys(settings, third.batch_id) == [1, 2, 3, 4, 5]
    conn.rollback()
    conn.close()


def test_realtime_claims_exclude_and_are_excluded(legacy_db: Settings) -> None:
    settings = _with(legacy_db, batch_size=5)
    conn = connect(settings)
    small = claim_realtime(conn, settings, limit=3)
    assert small is not None
    assert [(r.key, r.version) for r in small.rows] == [("1", 1), ("2", 1), ("3", 1)]
    record = json_record(settings.mapping, small.rows[0].texts)
    assert record["parent_id"] == "1" and record["Name"] == "SO-00000001"
    bulk = render.extract_batch(conn, settings)
    assert bulk is not None and _keys(settings, bulk.batch_id) == [4, 5, 6, 7, 8]
    again = claim_realtime(conn, settings, limit=2)
    assert again is not None and [r.key for r in again.rows] == ["9", "10"]
    with conn:
        marked = mark_synced(
            conn, settings, small.batch_id, [(r.key, "z" + r.key) for r in small.rows]
        )
    assert marked.marked == 3
    conn.close()


def test_nothing_pending_creates_nothing(legacy_db: Settings) -> None:
    query(legacy_db, "UPDATE orders SET synced = true")
    conn = connect(legacy_db)
    assert render.extract_batch(conn, legacy_db) is None
    assert claim_realtime(conn, legacy_db) is None
    conn.close()
    assert query(legacy_db, "SELECT count(*) FROM ordersync.batches") == [(0,)]


def test_failure_while_rendering_claims_nothing(
    legacy_db: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(path: Path) -> str:
        raise OSError("disk full")

    monkeypatch.setattr(render, "sha256_file", broken)
    conn = connect(legacy_db)
    with pytest.raises(OSError, match="disk full"):
        render.extract_batch(conn, legacy_db)
    monkeypatch.undo()
    assert query(legacy_db, "SELECT count(*) FROM ordersync.batches") == [(0,)]
    assert not any(legacy_db.work_dir.iterdir())
    assert render.extract_batch(conn, legacy_db) is not None  # the connection is still usable
    conn.close()


def test_rendered_text_is_the_claimed_version(legacy_db: Settings) -> None:
    """A row updated while its batch is being written: the CSV has the claimed text."""
    settings = _with(legacy_db, batch_size=10, org_timezone="Asia/Kolkata")
    query(settings, "UPDATE orders SET notes = 'before', shipped_at = '2024-05-01 08:15:00+00'")
    query(settings, "UPDATE orders SET synced = false")
    other = connect(settings, autocommit=True)
    conn = connect(settings)
    sink = io.BytesIO()

    def meanwhile(cur: object, batch_id: int, rows: int) -> None:
        with other.cursor() as c:  # commits at once, during our transaction
            c.execute("UPDATE orders SET notes = 'after' WHERE id = 4")

    done = extract_bulk(conn, settings, lambda _: sink, before_commit=meanwhile)
    assert done is not None and done.rows == 10
    rows = list(csv.reader(io.StringIO(sink.getvalue().decode("utf-8"), newline="")))
    notes = settings.mapping.api_names.index("Notes")
    shipped = settings.mapping.api_names.index("Shipped_At")
    assert {r[notes] for r in rows} == {"before"}
    assert {r[shipped] for r in rows} == {"2024-05-01T13:45:00+05:30"}
    assert ("4", 2) in ledger.batch_claims(conn, settings, done.batch_id)
    with conn:
        result = mark_synced(conn, settings, done.batch_id, [(str(k), "z") for k in range(1, 11)])
    assert (result.marked, result.stale) == (9, 1)
    assert sync_state(settings, 4)[:2] == (False, 3)
    other.close()
    conn.close()


def test_claim_refuses_an_open_transaction(legacy_db: Settings) -> None:
    conn = connect(legacy_db)
    with conn.cursor() as cur:
        cur.execute("UPDATE orders SET warehouse_note = 'mine' WHERE id = 1")
    with pytest.raises(RuntimeError, match="no open transaction"):
        render.extract_batch(conn, legacy_db)
    conn.commit()  # the caller's work was neither committed nor rolled back by the claim
    conn.close()
    assert query(legacy_db, "SELECT warehouse_note FROM orders WHERE id = 1") == [("mine",)]


def test_a_claim_walks_the_pending_index_in_key_order_on_a_scattered_table(
    fresh_db: Settings,
) -> None:
    """On a table whose rows are no longer in key order (old rows updated), the planner priced
    the claim as a bitmap scan of every pending row ahead, the field rules on each, then a
    sort: a run's claims grew from 80 ms to 1.2 s each at 1M rows. The claim's plan must stay
    the pending index in key order, stopped at the limit, whatever the statistics say."""
    from pipeline import demo
    from pipeline.ledger import BatchKind
    from pipeline.legacy.extract import claim, claiming

    conn = connect(fresh_db)
    try:
        demo.seed(conn, fresh_db, 60_000, bad_rows=0, seed=7)
        conn.commit()
        schema.install(fresh_db)
        conn.autocommit = True
        with conn.cursor() as cur:
            # scatter the rows: every other one rewritten at the table's end (no version bump:
            # an unmapped column), then fresh statistics with the key's correlation gone
            cur.execute("UPDATE orders SET internal_flags = internal_flags + 1 WHERE id % 2 = 0")
            cur.execute("VACUUM ANALYZE orders")
            cur.execute("SELECT correlation FROM pg_stats WHERE tablename = 'orders'"
                        " AND attname = 'id'")  # fmt: skip
            assert abs(cur.fetchone()[0]) < 0.9  # type: ignore[index]
            cur.execute("LOAD 'auto_explain'")
            cur.execute("SET auto_explain.log_min_duration = 0")
            cur.execute("SET auto_explain.log_level = notice")
        conn.autocommit = False
        del conn.notices[:]
        with claiming(conn, fresh_db) as kt, conn.cursor() as cur:
            taken, _ = claim(cur, fresh_db, kt, kind=BatchKind.BULK, limit=5_000, run_id=None,
                             after="30000")  # fmt: skip
        assert taken is not None and taken.row_count == 5_000
        plans = [n for n in conn.notices if "Insert on batches" in n]
        assert len(plans) == 1, conn.notices
        assert "Index Scan using orders_ordersync_pending" in plans[0], plans[0]
        assert "Bitmap" not in plans[0] and "Sort" not in plans[0], plans[0]
    finally:
        conn.close()


def test_only_a_batch_that_fills_its_key_range_is_read_by_a_merge_join() -> None:
    from types import SimpleNamespace

    def batch(lo: str, hi: str, rows: int) -> Any:
        return SimpleNamespace(key_lo=lo, key_hi=hi, row_count=rows)

    assert render.fills_its_range(batch("1", "25000", 25_000))  # a first pass
    assert render.fills_its_range(batch("101", "200", 50))
    assert not render.fills_its_range(batch("1", "1000000", 25_000))  # a retry round's
    assert not render.fills_its_range(batch("A-1", "A-9", 9))  # keys that are not integers
