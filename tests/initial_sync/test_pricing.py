"""Claim pricing on real PostgreSQL: a claim takes exactly the rows it was priced on."""

from __future__ import annotations

import dataclasses

from pipeline import demo, ledger
from pipeline.initial_sync import price_claim
from pipeline.ledger import BatchKind, BatchState
from pipeline.legacy import render
from pipeline.legacy.connection import connect
from pipeline.legacy.extract import claim, claiming
from pipeline.settings import Settings
from tests.fixtures.db import LEGACY_BAD_ROWS, LEGACY_ROWS


def test_rows_freed_behind_the_open_batches_are_priced_with_the_claim_that_takes_them(
    legacy_db: Settings,
) -> None:
    settings = dataclasses.replace(legacy_db, batch_size=25_000)
    conn = connect(settings)
    try:
        demo.seed(conn, settings, 12_000, seed=7)  # 12,200 rows, 8 of them bad
        first = render.extract_batch(conn, settings, limit=6_000)
        second = render.extract_batch(conn, settings, limit=3_000)
        assert first is not None and second is not None
        with conn:  # the first batch fails: its 6,000 rows are free again, behind the second
            ledger.finish_batch(conn, settings, first.batch_id, BatchState.FAILED, "test")
        writable = LEGACY_ROWS + 12_000 - LEGACY_BAD_ROWS
        ahead = writable - 6_000 - 3_000  # 3,192: too few for a job of their own
        with claiming(conn, settings) as kt, conn.cursor() as cur:
            choice = price_claim(cur, settings, kt)
            assert choice is not None and choice.kind is BatchKind.BULK
            # priced on the rows the claim takes: all 9,192 free ones, from the first key
            assert (choice.rows, choice.after) == (ahead + 6_000, None)
            taken, _ = claim(cur, settings, kt, kind=BatchKind.BULK, limit=choice.rows,
                             run_id=None, after=choice.after)  # fmt: skip
            assert taken is not None and taken.row_count == choice.rows
    finally:
        conn.close()
