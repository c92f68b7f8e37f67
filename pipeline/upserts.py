"""Upsert batches, the unit all three modes send by Upsert calls: claim, call, reconcile.

A batch (``kind = realtime`` in the ledger) is up to 100 claimed rows (``claim_realtime``):
their JSON from the one serialiser, one Upsert call, then one transaction that marks the
accepted rows synced at the claimed version with their record id (an edit during the flight
keeps the row pending), records the refused rows' errors (held back or not by their code,
``pipeline.zoho.codes``), and ends the batch ``reconciled``, releasing its claims. A call that
fails ends the batch ``failed``: its rows are free again. Near-real-time flushes
(``pipeline.realtime``), interval runs (``pipeline.interval``) and the initial sync's upsert
step (``pipeline.initial_sync.upsert``) all send through :func:`send_batch`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import connection as Connection

from pipeline import ledger
from pipeline.ledger import BatchKind, BatchState, RowError, RunKind, RunState, record_row_errors
from pipeline.legacy.extract import RealtimeBatch, claim_realtime
from pipeline.legacy.mark import mark_synced
from pipeline.legacy.names import Names
from pipeline.serialize import json_record
from pipeline.settings import Settings
from pipeline.zoho import fields as zoho_fields
from pipeline.zoho.client import ZohoClient
from pipeline.zoho.limits import UPSERT_MAX_RECORDS, upsert_credits
from pipeline.zoho.results import UpsertOutcome

log = logging.getLogger(__name__)

# A realtime batch not reconciled after this long lost its worker (the task's hard limit is
# 360 s): it is ended ``failed`` so its rows are free again (upserts are safe to repeat).
_UNFINISHED = tuple(s for s in BatchState if not s.finished)


@dataclass(frozen=True)
class BatchResult:
    """One upsert batch: rows sent, accepted and marked, refused, changed meanwhile, credits."""

    batch_id: int
    sent: int
    ok: int
    refused: int
    marked: int
    stale: int  # accepted by Zoho but changed since the claim: still pending, goes again
    quarantined: int
    credits: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def reconcile(
    conn: Connection,
    settings: Settings,
    batch: RealtimeBatch,
    outcomes: Sequence[UpsertOutcome],
    *,
    seconds: float = 0.0,
) -> BatchResult:
    """Record Zoho's per-record outcomes of one realtime batch, in one transaction.

    Accepted rows are marked synced with their record id, version-checked; refused rows get
    a row error (Zoho's code, the first field it names, its message). The batch ends
    ``reconciled`` with its counts in ``stats``, which releases its claims.
    """
    if len(outcomes) != len(batch.rows):
        raise ValueError(
            f"batch {batch.batch_id}: {len(batch.rows)} rows, {len(outcomes)} outcomes"
        )
    accepted: list[tuple[str, str | None]] = []
    refused: list[RowError] = []
    for row, outcome in zip(batch.rows, outcomes, strict=True):
        if outcome.ok:
            accepted.append((row.key, outcome.record_id))
        else:
            fields = outcome.error_fields
            refused.append(
                RowError(row.key, outcome.code, fields[0] if fields else None, outcome.message)
            )
    sent = len(batch.rows)
    with conn:
        marked = mark_synced(conn, settings, batch.batch_id, accepted)
        errors = record_row_errors(conn, settings, batch.batch_id, refused)
        result = BatchResult(
            batch_id=batch.batch_id,
            sent=sent,
            ok=len(accepted),
            refused=len(refused),
            marked=marked.marked,
            stale=marked.stale,
            quarantined=errors.quarantined,
            credits=upsert_credits(sent),
            seconds=round(seconds, 4),
        )
        ledger.transition(
            conn,
            settings,
            batch.batch_id,
            BatchState.RECONCILED,
            expected=_UNFINISHED,
            stats=result.as_dict(),
        )
    log.info(
        "batch %s: sent %d, ok %d, refused %d, stale %d, %d credits, %.3f s",
        batch.batch_id, sent, result.ok, result.refused, result.stale, result.credits, seconds,
    )  # fmt: skip
    return result


def send_batch(
    conn: Connection,
    settings: Settings,
    client: ZohoClient,
    *,
    limit: int = UPSERT_MAX_RECORDS,
    run_id: int | None = None,
) -> BatchResult | None:
    """Claim up to ``limit`` ready rows, upsert them, reconcile; None when no row is free.

    If the upsert raises (a transient error the client's own retries did not outlast, the
    credit budget, a fatal answer), the batch ends ``failed`` with the error and its rows stay
    pending for a later flush; the error is raised again.
    """
    started = time.perf_counter()
    batch = claim_realtime(conn, settings, limit=limit, run_id=run_id)
    if batch is None:
        return None
    with _held(conn, batch.batch_id):  # while the call is out: a live worker is on the batch
        return _send(conn, settings, client, batch, started, run_id)


@contextmanager
def _held(conn: Connection, batch_id: int) -> Iterator[None]:
    """The batch's session advisory lock (``ledger.BATCH_LOCK_CLASS``): it goes away with a
    dead worker's connection, which is how :func:`release_abandoned` knows the batch is lost."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s, %s)", (ledger.BATCH_LOCK_CLASS, batch_id))
    try:
        yield
    finally:
        with contextlib.suppress(psycopg2.Error):  # connection gone: the lock went with it
            conn.rollback()
            with conn, conn.cursor() as cur:
                cur.execute(
                    "SELECT pg_advisory_unlock(%s, %s)", (ledger.BATCH_LOCK_CLASS, batch_id)
                )


def _send(
    conn: Connection, settings: Settings, client: ZohoClient, batch: RealtimeBatch,
    started: float, run_id: int | None,
) -> BatchResult:
    try:
        records = [
            json_record(settings.mapping, row.texts, ignore_empty=settings.zoho.ignore_empty)
            for row in batch.rows
        ]
        outcomes = client.upsert(records, run_id=run_id, batch_id=batch.batch_id)
    except Exception as exc:
        with conn:
            ledger.finish_batch(conn, settings, batch.batch_id, BatchState.FAILED, error=str(exc))
        log.warning("batch %s failed, its %d rows stay pending: %s", batch.batch_id,
                    len(batch.rows), exc)  # fmt: skip
        raise
    result = reconcile(conn, settings, batch, outcomes, seconds=time.perf_counter() - started)
    if result.refused and zoho_fields.refused_for_data(o.code for o in outcomes if not o.ok):
        zoho_fields.mark_stale(client)
    return result


def release_abandoned(
    conn: Connection, settings: Settings, older_than: float | None = None
) -> list[int]:
    """End ``failed`` the realtime batches whose worker died mid-flush: stuck
    (``ledger.stuck_sql``) for ``older_than`` seconds (default ``stall_after``), no session
    holding their lock. A live flush holds it for as long as its call takes.

    Their rows are pending still and become free again; sending them twice is harmless
    (upserts match on the unique field). Returns the batch ids released.
    """
    older_than = settings.stall_after if older_than is None else float(older_than)
    with conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT id FROM {} batches WHERE kind = %s AND {} ORDER BY id"
            ).format(Names(settings).ledger_table("batches"), ledger.stuck_sql(older_than)),
            (BatchKind.REALTIME.value,),
        )
        ids = [int(r[0]) for r in cur.fetchall()]
        for batch_id in ids:
            ledger.finish_batch(
                conn, settings, batch_id, BatchState.FAILED,
                error=f"abandoned: its worker died, no outcome recorded within {older_than:.0f} s",
            )  # fmt: skip
        if ids:  # a flush's own run dies with its worker: nothing else would end it
            cur.execute(
                sql.SQL(
                    "UPDATE {runs} SET state = %s, finished_at = now(), updated_at = now(),"
                    " error = %s WHERE kind = %s AND state = %s AND id IN"
                    " (SELECT run_id FROM {batches} WHERE id = ANY(%s))"
                ).format(runs=Names(settings).ledger_table("runs"),
                         batches=Names(settings).ledger_table("batches")),  # fmt: skip
                (RunState.FAILED.value, "its worker died during a flush; the rows went round again",
                 RunKind.REALTIME.value, RunState.RUNNING.value, ids),  # fmt: skip
            )
    if ids:
        log.warning("released abandoned realtime batches %s", ids)
    return ids
