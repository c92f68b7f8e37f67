"""Marking: what Zoho accepted becomes synced (one statement that also clears its row error).

Recording what Zoho refused is the ledger's (``pipeline.ledger.record_row_errors``).

Both take a whole batch's outcomes and run one statement, joining the keys with the versions
the batch claimed (``batches.keys``/``versions``): a row is marked synced only where
``sync_version`` still
equals the claimed version, so a row edited while its batch was in flight stays pending and
goes in the next round.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg2 import sql
from psycopg2.extensions import connection as Connection

from pipeline.arrays import text_array
from pipeline.legacy.names import Names, key_type
from pipeline.settings import Settings


@dataclass(frozen=True)
class MarkResult:
    """``marked``: now synced; ``stale``: changed since claiming, left pending; ``unknown``:
    keys that are not in the batch (ignored)."""

    marked: int
    stale: int
    unknown: int


def mark_synced(
    conn: Connection,
    settings: Settings,
    batch_id: int,
    outcomes: Iterable[tuple[str, str | None]],
) -> MarkResult:
    """Set ``synced = true`` and ``zoho_id`` for ``(row_key, zoho_id)`` pairs of a batch.

    One UPDATE for the whole batch (``FROM unnest(keys, zoho_ids)`` joined with the batch's
    claimed ``unnest(keys, versions)``), only where the version is unchanged. Also clears
    those rows' errors, and gives a tombstone of a row deleted while in flight the Zoho id
    its batch just created (so ``pipeline.deletes`` can delete that record too).
    Runs in the caller's transaction (the caller commits, typically with the batch's state).
    Idempotent: marking the same outcomes again changes nothing that matters.
    """
    keys: list[str] = []
    zoho_ids: list[str | None] = []
    for key, zoho_id in outcomes:
        keys.append(str(key))
        zoho_ids.append(zoho_id)
    if not keys:
        return MarkResult(0, 0, 0)
    n = Names(settings)
    statement = sql.SQL(
        """WITH u AS (SELECT * FROM unnest(%(keys)s::text[], %(ids)s::text[])
                           AS u(row_key, zoho_id)),
                c AS (SELECT u.row_key, u.zoho_id, br.version FROM u
                      JOIN (SELECT x.row_key, x.version FROM {batches} b,
                                   unnest(b.keys, b.versions) AS x(row_key, version)
                            WHERE b.id = %(batch)s) AS br ON br.row_key = u.row_key),
                m AS (UPDATE {table} t SET {synced} = true, {zoho_id} = c.zoho_id
                      FROM c WHERE t.{key} = c.row_key::{kt} AND t.{version} = c.version
                      RETURNING t.{key}),
                d AS (DELETE FROM {row_errors} e USING m WHERE e.row_key = m.{key}::text),
                z AS (UPDATE {tombstones} z SET zoho_id = c.zoho_id FROM c
                      WHERE z.row_key = c.row_key AND z.zoho_id IS NULL
                        AND c.zoho_id IS NOT NULL)
           SELECT (SELECT count(*) FROM m), (SELECT count(*) FROM c)"""
    ).format(
        batches=n.ledger_table("batches"),
        row_errors=n.ledger_table("row_errors"),
        tombstones=n.ledger_table("tombstones"),
        table=n.table,
        synced=n.synced,
        zoho_id=n.zoho_id,
        key=n.key,
        kt=key_type(conn, settings),
        version=n.version,
    )
    with conn.cursor() as cur:
        cur.execute(
            statement, {"keys": text_array(keys), "ids": text_array(zoho_ids), "batch": batch_id}
        )
        marked, in_batch = cur.fetchone()  # type: ignore[misc]
    return MarkResult(int(marked), int(in_batch) - int(marked), len(keys) - int(in_batch))


@dataclass(frozen=True)
class RowErrorView:
    """A row error as ``ordersync errors`` shows it."""

    row_key: str
    code: str
    field: str | None
    message: str | None
    attempts: int
    quarantined: bool  # held back now (quarantined and the row has not changed since)
    version: int
    current_version: int | None  # None: the row no longer exists
    first_seen: datetime
    last_seen: datetime


def row_error_counts(conn: Connection, settings: Settings) -> tuple[int, int]:
    """How many rows have a recorded Zoho error, and how many of them are quarantined.

    A row counts as quarantined only while its version is the one that failed: a row
    changed since then is tried again.
    """
    n = Names(settings)
    statement = sql.SQL(
        "SELECT count(*), count(*) FILTER (WHERE e.quarantined AND e.version = t.{v})"
        " FROM {e} e LEFT JOIN {t} t ON t.{k} = e.row_key::{kt}"
    ).format(
        v=n.version,
        e=n.ledger_table("row_errors"),
        t=n.table,
        k=n.key,
        kt=key_type(conn, settings),
    )
    with conn.cursor() as cur:
        cur.execute(statement)
        row = cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def list_row_errors(
    conn: Connection, settings: Settings, *, quarantined_only: bool = False, limit: int = 100
) -> list[RowErrorView]:
    """Recorded row errors, quarantined first, newest first."""
    n = Names(settings)
    where = (
        sql.SQL("WHERE e.quarantined AND e.version = t.{}").format(n.version)
        if (quarantined_only)
        else sql.SQL("")
    )
    statement = sql.SQL(
        """SELECT e.row_key, e.code, e.field, e.message, e.attempts,
                  e.quarantined AND e.version IS NOT DISTINCT FROM t.{version},
                  e.version, t.{version}, e.first_seen, e.last_seen
           FROM {row_errors} e LEFT JOIN {table} t ON t.{key} = e.row_key::{kt}
           {where}
           ORDER BY 6 DESC, e.last_seen DESC LIMIT %s"""
    ).format(
        version=n.version,
        row_errors=n.ledger_table("row_errors"),
        table=n.table,
        key=n.key,
        kt=key_type(conn, settings),
        where=where,
    )
    with conn.cursor() as cur:
        cur.execute(statement, (limit,))
        fetched: Sequence[Any] = cur.fetchall()
    return [RowErrorView(*row) for row in fetched]


def mark_pending(conn: Connection, settings: Settings, keys: Sequence[str]) -> int:
    """Make the rows of ``keys`` pending again (``synced = false``) so the normal sync resends
    them, e.g. after ``verify`` found them missing from Zoho or different there.

    The version is not bumped (the row's data did not change); ``sync_pending_since`` starts
    now for rows that were synced. Runs in the caller's transaction; returns the rows changed.
    """
    if not keys:
        return 0
    n = Names(settings)
    statement = sql.SQL(
        "UPDATE {table} SET {synced} = false, {since} = now()"
        " WHERE {key} = ANY(%(keys)s::{kt}[]) AND {synced}"
    ).format(
        table=n.table, synced=n.synced, since=n.pending_since, key=n.key,
        kt=key_type(conn, settings),
    )
    with conn.cursor() as cur:
        cur.execute(statement, {"keys": [str(k) for k in keys]})
        return int(cur.rowcount)
