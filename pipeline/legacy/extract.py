"""Extraction: claim pending rows as a batch and read exactly those rows, in one snapshot.

Claiming and reading are one REPEATABLE READ transaction that starts with
``LOCK TABLE ordersync.claim_lock`` (before any query, so the snapshot is taken after the lock
is granted and sees every earlier claim):

1. the free rows are those pending (``NOT synced``), outside the key range of every unfinished
   bulk batch, not among the keys of an unfinished realtime batch, and not held back
   (quarantined) at their current version; of them, the *sendable* ones also pass the
   mapping's field rules (``pipeline.validate``): the others are held back as they are passed
   over, and never sent;
2. the claim takes up to ``limit`` of them in key order, after the last claimed range first
   (so a run moves forward without re-walking rows in flight) and from the start when nothing
   is left ahead, and records the batch with its keys, versions and key range
   (``pipeline.ledger``);
3. in the same snapshot the batch's rows are read through the serialiser's expressions: the
   text sent to Zoho is exactly the claimed version, so marking by that version is exact.

Two extractors never get the same row: their claiming transactions are serialised by the lock
(held for one batch's COPY, ~0.1 s), and each sees the other's committed claim.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

from psycopg2 import sql
from psycopg2.extensions import (
    ISOLATION_LEVEL_REPEATABLE_READ,
    TRANSACTION_STATUS_IDLE,
)
from psycopg2.extensions import connection as Connection

from pipeline import ledger, validate
from pipeline.ledger import BatchKind, BatchState
from pipeline.legacy.names import Names, column_info, key_type
from pipeline.serialize import select_list, session_timezone_sql
from pipeline.settings import Settings
from pipeline.zoho import codes
from pipeline.zoho.limits import UPSERT_MAX_RECORDS

log = logging.getLogger(__name__)

# A claimer waits at most this long for another one's batch (~0.1 s each), then fails with
# psycopg2.errors.LockNotAvailable (transient: retry later).
CLAIM_LOCK_TIMEOUT = "30s"


@dataclass(frozen=True)
class Claim:
    """A batch just claimed: its id, row count and (bulk) key range."""

    batch_id: int
    kind: BatchKind
    row_count: int
    key_lo: str
    key_hi: str


def _begin(conn: Connection, settings: Settings) -> sql.Composable:
    """Start the claiming transaction: isolation, lock, time zone. Returns the key's SQL type."""
    n = Names(settings)
    conn.isolation_level = ISOLATION_LEVEL_REPEATABLE_READ
    with conn.cursor() as cur:
        # SET and LOCK take no snapshot: the transaction's snapshot is taken by the first
        # query, after the lock is granted, so it sees every earlier claim.
        cur.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(CLAIM_LOCK_TIMEOUT)))
        cur.execute(
            sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(
                n.ledger_table("claim_lock")
            )
        )
        cur.execute(session_timezone_sql(settings.org_timezone))
    return key_type(conn, settings)


def require_idle(conn: Connection) -> None:
    """Refuse a connection inside a transaction: a claim never commits or rolls back a caller's
    work."""
    if conn.info.transaction_status != TRANSACTION_STATUS_IDLE:
        raise RuntimeError("claiming needs a connection with no open transaction")


@contextmanager
def claiming(conn: Connection, settings: Settings) -> Iterator[sql.Composable]:
    """The claiming transaction (module docstring): REPEATABLE READ under the claim lock.

    Yields the key's SQL type for :func:`claim` and :func:`free_rows`. The block's work is
    committed when it ends, rolled back if it raises; the connection must be idle before
    (:func:`require_idle`) and is back at the server's default isolation after.
    """
    require_idle(conn)
    ok = False
    try:
        yield _begin(conn, settings)
        ok = True
    finally:
        if ok:
            conn.commit()
        else:
            conn.rollback()
        conn.isolation_level = None  # back to the server default


@dataclass(frozen=True)
class FreeRows:
    """The claim rules, fixed for one claiming transaction (alias ``t``).

    ``sendable``: pending, outside every unfinished batch, not held back at their version, and
    passing the mapping's field rules (``pipeline.validate``) unless the user released them.
    ``invalid``: the free rows that break a rule (held back, never sent); None when the mapping
    has no rules. ``highest``: the highest key of an unfinished bulk batch, or None.
    ``free``: pending and outside every unfinished batch, rules not applied (sendable or
    invalid): cheap to test, no rule evaluated. ``broken``: a free row breaks a rule (the rest
    of ``invalid``), or None.
    """

    sendable: sql.Composable
    invalid: sql.Composable | None
    highest: Any
    free: sql.Composable
    broken: sql.Composable | None = None


def free_rows(cur: Any, settings: Settings, kt: sql.Composable) -> FreeRows:
    """The claim rules now (:class:`FreeRows`), in the caller's transaction.

    Open bulk ranges go in as literals: the predicate must not see the claim we are about to
    insert, since the same predicate selects the batch's rows after the insert.
    """
    n = Names(settings)
    batches = n.ledger_table("batches")
    errors = n.ledger_table("row_errors")
    finished = ledger.finished_states_sql()
    cur.execute(
        sql.SQL(
            "SELECT key_lo, key_hi FROM {} WHERE kind = %s AND state NOT IN ({})"
            " AND key_lo IS NOT NULL"
        ).format(batches, finished),
        (BatchKind.BULK.value,),
    )
    ranges = cur.fetchall()
    cur.execute(
        sql.SQL(
            "SELECT (SELECT max(key_hi::{kt}) FROM {b} WHERE kind = %s AND state NOT IN ({u})),"
            " EXISTS (SELECT 1 FROM {b} WHERE kind = %s AND state NOT IN ({u})),"
            " EXISTS (SELECT 1 FROM {e} WHERE quarantined),"
            " EXISTS (SELECT 1 FROM {e} WHERE code = %s AND NOT quarantined)"
        ).format(kt=kt, b=batches, u=finished, e=errors),
        (BatchKind.BULK.value, BatchKind.REALTIME.value, codes.VALIDATION_CODE),
    )
    highest, realtime_open, any_quarantined, any_released = cur.fetchone()
    parts: list[sql.Composable] = [sql.SQL("NOT t.{}").format(n.synced)]
    for lo, hi in ranges:
        parts.append(
            sql.SQL("NOT (t.{k} BETWEEN {lo}::{kt} AND {hi}::{kt})").format(
                k=n.key, lo=sql.Literal(lo), hi=sql.Literal(hi), kt=kt
            )
        )
    # Predicates over empty sets are left out: they would cost a hash probe per row for nothing.
    if realtime_open:
        parts.append(
            sql.SQL(
                "t.{k}::text NOT IN (SELECT unnest(keys) FROM {b}"
                " WHERE kind = {rt} AND state NOT IN ({u}))"
            ).format(k=n.key, b=batches, rt=sql.Literal(BatchKind.REALTIME.value), u=finished)
        )
    if any_quarantined:
        parts.append(
            sql.SQL(
                "(t.{k}::text, t.{v}) NOT IN (SELECT row_key, version FROM {e} WHERE quarantined)"
            ).format(k=n.key, v=n.version, e=errors)
        )
    base = sql.SQL(" AND ").join(parts)
    broken = validate.invalid_predicate(settings, "t", column_info(cur.connection, settings))
    if broken is None:
        return FreeRows(base, None, highest, base)
    if any_released:  # ``ordersync retry --force``: the user knows better than the validator
        broken = sql.SQL(
            "({b} AND (t.{k}::text, t.{v}) NOT IN"
            " (SELECT row_key, version FROM {e} WHERE code = {c} AND NOT quarantined))"
        ).format(b=broken, k=n.key, v=n.version, e=errors, c=sql.Literal(codes.VALIDATION_CODE))
    return FreeRows(
        sql.SQL("{} AND NOT {}").format(base, broken),
        sql.SQL("{} AND {}").format(base, broken),
        highest,
        base,
        broken,
    )


def _key_bounds(
    settings: Settings, kt: sql.Composable, after: Any, upto: Any
) -> list[sql.Composable]:
    n = Names(settings)
    bounds: list[sql.Composable] = []
    if after is not None:
        bounds.append(sql.SQL("t.{} > {}::{}").format(n.key, sql.Literal(str(after)), kt))
    if upto is not None:
        bounds.append(sql.SQL("t.{} <= {}::{}").format(n.key, sql.Literal(str(upto)), kt))
    return bounds


def count_sendable(
    cur: Any,
    settings: Settings,
    kt: sql.Composable,
    free: FreeRows,
    *,
    after: Any = None,
    cap: int | None = None,
) -> int:
    """Sendable rows (with keys above ``after``, if given), counted up to ``cap``."""
    return _count(cur, settings, kt, free.sendable, after, None, cap)


def count_free(
    cur: Any,
    settings: Settings,
    kt: sql.Composable,
    free: FreeRows,
    *,
    after: Any = None,
    upto: Any = None,
    cap: int | None = None,
) -> int:
    """Free rows (sendable or breaking a rule; keys in ``(after, upto]``), up to ``cap``: the
    key and the pending flag only, no field rule evaluated."""
    return _count(cur, settings, kt, free.free, after, upto, cap)


def _count(
    cur: Any,
    settings: Settings,
    kt: sql.Composable,
    predicate: sql.Composable,
    after: Any,
    upto: Any,
    cap: int | None,
) -> int:
    n = Names(settings)
    where = sql.SQL(" AND ").join([predicate, *_key_bounds(settings, kt, after, upto)])
    inner = sql.SQL("SELECT 1 FROM {} t WHERE {}").format(n.table, where)
    if cap is not None:
        # in key order: the pending index, whose entries for rows synced since are skipped
        # once seen dead, where the planner's statistics (all pending at the last ANALYZE)
        # would pick a sequential scan of the whole table, every time, at the end of a run
        inner = sql.SQL("{} ORDER BY t.{} LIMIT {}").format(inner, n.key, sql.Literal(cap))
    cur.execute(sql.SQL("SELECT count(*) FROM ({}) AS f").format(inner))
    return int(cur.fetchone()[0])


def hold_invalid(
    cur: Any,
    settings: Settings,
    kt: sql.Composable,
    free: FreeRows,
    *,
    after: Any = None,
    upto: Any = None,
    batch_id: int | None = None,
) -> int:
    """Hold back the free rows that break a field rule (keys in ``(after, upto]``); how many.

    ``batch_id``: the claim that passed over them (so its run counts them), if any.

    Each gets a row error ``ORDERSYNC_VALIDATION`` at its version (the first field it breaks,
    every broken rule with the value's shape, never the value), held at once: it costs no
    credit until the row changes or ``ordersync retry --force`` releases it.
    """
    if free.invalid is None:
        return 0
    n = Names(settings)
    field, message = validate.fault_columns(settings, "t")
    where = sql.SQL(" AND ").join([free.invalid, *_key_bounds(settings, kt, after, upto)])
    cur.execute(
        ledger.hold_back_sql(
            settings,
            sql.SQL(
                "SELECT t.{k}::text, t.{v}, {batch}, {code}, {field}, {message}"
                " FROM {table} t WHERE {where}"
            ).format(
            k=n.key,
            v=n.version,
            batch=sql.Literal(batch_id),
            code=sql.Literal(codes.VALIDATION_CODE),
            field=field,
            message=message,
            table=n.table,
            where=where,
            ),
        )
    )
    held = int(cur.rowcount)
    if held:
        log.info("%s rows break a field rule: held back, not sent (ordersync errors)", held)
    return held


def hold_invalid_pending(conn: Connection, settings: Settings) -> int:
    """Hold back every free pending row that breaks a field rule, in its own claiming
    transaction (before a plan is priced on the pending rows: interval runs)."""
    with claiming(conn, settings) as kt, conn.cursor() as cur:
        return hold_invalid(cur, settings, kt, free_rows(cur, settings, kt))


# The claim's plan: the pending index in key order (see ``_claim``), then back to the defaults.
CLAIM_PLAN_ON = (
    "SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off; SET LOCAL jit = off"
)
CLAIM_PLAN_OFF = (
    "SET LOCAL enable_seqscan = DEFAULT; SET LOCAL enable_bitmapscan = DEFAULT;"
    " SET LOCAL jit = DEFAULT"
)


def _claim(
    cur: Any,
    settings: Settings,
    kt: sql.Composable,
    free: sql.Composable,
    after: Any,
    kind: BatchKind,
    limit: int,
    run_id: int | None,
) -> Claim | None:
    n = Names(settings)
    ahead = sql.SQL(" AND ").join([sql.SQL(""), *_key_bounds(settings, kt, after, None)])
    # The planner takes the field rules (a dozen ORed tests) to pass a few dozen rows of the
    # table, so it reads every pending row ahead and sorts them rather than walk the pending
    # index in key order to the limit: at 1M rows the first claim evaluated the rules on every
    # row (~3 s). A sequential scan was the plan on a table in key order; on one whose rows
    # are scattered (old rows updated: the key's correlation gone) it is a bitmap scan of the
    # pending index, with the same cost: a run's claims grew from 80 ms to 1.2 s each. Neither
    # for this statement (nor JIT, whose compiling costs more than a batch's rules): the
    # pending index, in order, to the limit.
    cur.execute(CLAIM_PLAN_ON)
    # No query parameters: the predicates carry literals (regexes) that may hold "%".
    cur.execute(
        sql.SQL(
            """INSERT INTO {batches}
                   (run_id, kind, state, row_count, key_lo, key_hi, keys, versions)
               SELECT {run}, {kind}, {state}, count(*), min(k)::text, max(k)::text,
                      array_agg(k::text), array_agg(v)
               FROM (SELECT t.{key} AS k, t.{version} AS v FROM {table} t
                     WHERE {free} {ahead}
                     ORDER BY {order} LIMIT {limit}) AS c
               HAVING count(*) > 0
               RETURNING id, row_count, key_lo, key_hi"""
        ).format(
            batches=n.ledger_table("batches"),
            run=sql.Literal(run_id),
            kind=sql.Literal(kind.value),
            state=sql.Literal(BatchState.EXTRACTED.value),
            key=n.key,
            version=n.version,
            table=n.table,
            free=free,
            ahead=ahead if after is not None else sql.SQL(""),
            # realtime: the oldest change first (rows pending since before install count as
            # oldest), so no change waits behind newer ones; bulk: key order, for key ranges
            order=(
                sql.SQL("t.{} NULLS FIRST, t.{}").format(n.pending_since, n.key)
                if kind is BatchKind.REALTIME
                else sql.SQL("t.{}").format(n.key)
            ),
            limit=sql.Literal(limit),
        )
    )
    row = cur.fetchone()
    cur.execute(CLAIM_PLAN_OFF)
    if row is None:
        return None
    return Claim(int(row[0]), kind, int(row[1]), row[2], row[3])


# ``claim(after=AUTO)``: a bulk claim moves forward past the highest open batch first.
AUTO: Any = object()


def claim(
    cur: Any,
    settings: Settings,
    kt: sql.Composable,
    *,
    kind: BatchKind,
    limit: int,
    run_id: int | None,
    after: Any = AUTO,
) -> tuple[Claim | None, sql.Composable]:
    """Claim inside :func:`claiming`'s transaction; returns the claim and the sendable-row
    predicate.

    ``after``: claim only keys above it (None: from the first key). By default a bulk claim
    takes the rows after the highest open bulk batch, and from the start when none is left
    there; a realtime claim starts at the first key. Rows passed over because they break a
    field rule are held back (:func:`hold_invalid`), so they show in ``ordersync errors``.
    """
    if limit <= 0:
        raise ValueError("limit must be positive")
    free = free_rows(cur, settings, kt)
    if after is not AUTO:
        tries = [after]
    elif free.highest is not None and kind is BatchKind.BULK:
        tries = [free.highest, None]
    else:
        tries = [None]
    claimed = None
    for start in tries:
        # The field rules cost PostgreSQL more than the rest of a claim: they are evaluated
        # only where a row could be claimed or held back, never over an empty range; a bulk
        # claim (key order) holds back only where it passed over some free row.
        if count_free(cur, settings, kt, free, after=start, cap=1) == 0:
            continue
        claimed = _claim(cur, settings, kt, free.sendable, start, kind, limit, run_id)
        if claimed is None:
            hold_invalid(cur, settings, kt, free, after=start)
        elif free.invalid is not None and (
            kind is not BatchKind.BULK
            or claimed.row_count < count_free(cur, settings, kt, free, after=start,
                                              upto=claimed.key_hi)  # fmt: skip
        ):
            hold_invalid(cur, settings, kt, free, after=start, upto=claimed.key_hi,
                         batch_id=claimed.batch_id)  # fmt: skip
        if claimed is not None:
            break
    return claimed, free.sendable


@dataclass(frozen=True)
class Extracted:
    """A bulk batch claimed and copied: ``rows`` CSV lines went to the sink."""

    batch_id: int
    rows: int
    key_lo: str
    key_hi: str


def extract_bulk(
    conn: Connection,
    settings: Settings,
    open_sink: Callable[[int], IO[bytes]],
    *,
    limit: int | None = None,
    run_id: int | None = None,
    before_commit: Callable[[Any, int, int], None] | None = None,
) -> Extracted | None:
    """Claim the next bulk batch and stream its rows as CSV (no header) into a sink.

    One transaction: claim, ``open_sink(batch_id)``, ``COPY (SELECT <serialiser expressions>
    …) TO STDOUT`` into that sink, then
    ``before_commit(cursor, batch_id, rows)`` (to record the rendered file with the batch),
    commit. Returns None, writing nothing, when no row is free. Memory stays bounded: rows go
    from the server straight into ``sink``.
    """
    limit = settings.batch_size if limit is None else limit
    n = Names(settings)
    with claiming(conn, settings) as kt, conn.cursor() as cur:
        claimed, free = claim(cur, settings, kt, kind=BatchKind.BULK, limit=limit, run_id=run_id)
        if claimed is None:
            return None
        query = sql.SQL(
            "SELECT {exprs} FROM {table} t WHERE t.{key} BETWEEN {lo}::{kt} AND {hi}::{kt}"
            " AND {free} ORDER BY t.{key}"
        ).format(
            exprs=select_list(settings.mapping, "t"),
            table=n.table,
            key=n.key,
            lo=sql.Literal(claimed.key_lo),
            hi=sql.Literal(claimed.key_hi),
            kt=kt,
            free=free,
        )
        cur.copy_expert(
            sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv, HEADER false)")
            .format(query)
            .as_string(conn),
            open_sink(claimed.batch_id),
        )
        rows = cur.rowcount
        if rows != claimed.row_count:  # same snapshot, same predicate: cannot differ
            raise RuntimeError(
                f"batch {claimed.batch_id}: claimed {claimed.row_count} rows, read {rows}"
            )
        if before_commit is not None:
            before_commit(cur, claimed.batch_id, rows)
    return Extracted(claimed.batch_id, rows, claimed.key_lo, claimed.key_hi)


@dataclass(frozen=True)
class BatchRow:
    """One claimed row read for an upsert: key, claimed version, canonical texts."""

    key: str
    version: int
    texts: tuple[str | None, ...]


@dataclass(frozen=True)
class RealtimeBatch:
    batch_id: int
    rows: list[BatchRow]


def claim_realtime(
    conn: Connection,
    settings: Settings,
    *,
    limit: int = UPSERT_MAX_RECORDS,
    run_id: int | None = None,
) -> RealtimeBatch | None:
    """Claim up to ``limit`` pending rows (oldest change first) for a near-real-time upsert.

    Same claim rules and snapshot as bulk batches; the batch claims exactly its keys. Returns
    the rows as canonical texts (build the JSON with ``pipeline.serialize.json_record``).
    """
    n = Names(settings)
    with claiming(conn, settings) as kt, conn.cursor() as cur:
        claimed, _ = claim(cur, settings, kt, kind=BatchKind.REALTIME, limit=limit, run_id=run_id)
        if claimed is None:
            return None
        cur.execute(
            sql.SQL(
                """SELECT c.row_key, c.version, {exprs}
                   FROM {batches} b, unnest(b.keys, b.versions) AS c(row_key, version)
                   JOIN {table} t ON t.{key} = c.row_key::{kt}
                   WHERE b.id = %s ORDER BY t.{key}"""
            ).format(
                exprs=select_list(settings.mapping, "t"),
                batches=n.ledger_table("batches"),
                table=n.table,
                key=n.key,
                kt=kt,
            ),
            (claimed.batch_id,),
        )
        rows = [BatchRow(r[0], int(r[1]), tuple(r[2:])) for r in cur.fetchall()]
    return RealtimeBatch(claimed.batch_id, rows)
