"""A bulk batch coming back: poll the job, download and reconcile its result."""

from __future__ import annotations

import csv
import logging
import time
import zipfile
from dataclasses import replace
from datetime import UTC, datetime

from psycopg2 import sql
from psycopg2.extensions import connection as Connection

from pipeline import ledger
from pipeline.initial_sync.batch import (
    advance,
    after_finish,
    batch_lock,
    cleanup,
    job_failed,
    load,
    nothing,
    result_path,
    seconds_since,
    set_fields,
    step_error,
    table,
    touch,
)
from pipeline.initial_sync.callbacks import (
    token_digest,
    token_of,
)
from pipeline.initial_sync.decisions import (
    Outcome,
    Step,
    job_remaining,
    poll_countdown,
)
from pipeline.initial_sync.sending import waiting_for_slot
from pipeline.ledger import Batch, BatchState, RowError, record_row_errors
from pipeline.legacy.mark import mark_synced
from pipeline.settings import Settings
from pipeline.zoho import codes
from pipeline.zoho import fields as zoho_fields
from pipeline.zoho.client import ZohoClient
from pipeline.zoho.errors import FatalZohoError
from pipeline.zoho.results import JobState, ResultRow, RowStatus, iter_result_rows

log = logging.getLogger(__name__)


def _adopt_hint(conn: Connection, settings: Settings, client: ZohoClient, batch: Batch) -> bool:
    """Take the job a callback named, if Zoho confirms it calls back with this batch's token."""
    hint = batch.job_hint or ""
    try:
        job = client.get_job(hint)
    except FatalZohoError as exc:  # Zoho does not know that job: not ours either
        log.warning("batch %s: job %s named by a callback: %s", batch.id, hint, exc)
        job = None
    token = None if job is None else token_of(job.callback_url)
    if job is None or token is None or token_digest(token) != batch.callback_digest:
        log.warning("batch %s: job %s named by a callback is not ours; ignored", batch.id, hint)
        set_fields(conn, settings, batch.id, job_hint=None)
        conn.commit()
        return False
    moved = ledger.transition(
        conn, settings, batch.id, BatchState.JOB_CREATED, expected=BatchState.UPLOADED,
        job_id=job.id, job_hint=None, stats={**batch.stats, "polls": 0},
    )  # fmt: skip
    conn.commit()
    log.info("batch %s: job %s learnt from its callback", batch.id, job.id)
    return moved


def poll(
    conn: Connection,
    settings: Settings,
    client: ZohoClient,
    batch_id: int,
    *,
    by_callback: bool = False,
) -> Outcome:
    """``job_created`` → ``job_done`` once Zoho says COMPLETED; FAILED → :func:`_job_failed`;
    a fatal answer (the job is unknown) → :func:`_step_error`.

    Not finished yet: touch the batch and ask to be polled again after a growing countdown.
    Also resolves a job id named by a callback for a batch still waiting on its create intent.

    ``by_callback``: an early poll woken by a callback (``cli.web``). Its batch's own chain of
    polls is still scheduled, so when the job is not finished it asks for no next poll: a
    forged or replayed callback costs this one GET, never a second chain polling beside the
    first. Unless it has just adopted the job a callback named: then no chain exists yet.
    """
    with batch_lock(conn, batch_id):
        batch = load(conn, settings, batch_id)
        if batch is None:
            return nothing(batch_id, None)
        adopted = False
        if batch.state is BatchState.UPLOADED and batch.job_hint:
            if not _adopt_hint(conn, settings, client, batch):
                return nothing(batch_id, "hint refused")
            batch = load(conn, settings, batch_id)
            assert batch is not None
            adopted = True
        if batch.state is not BatchState.JOB_CREATED:
            return nothing(batch_id, batch.state)
        try:
            job = client.get_job(batch.job_id or "")
        except FatalZohoError as exc:  # e.g. RESOURCE_NOT_FOUND: Zoho no longer knows the job
            return step_error(conn, settings, batch, Step.POLL, f"job {batch.job_id}: {exc}")
        stats = dict(batch.stats)
        if not job.terminal:
            polls = int(stats.get("polls", 0)) + 1
            stats["polls"] = polls
            age = seconds_since(batch.job_requested_at) if batch.job_requested_at else None
            remaining = None
            if job.total is not None:  # Zoho's counts so far: the progress line, the next poll
                processed = sum(n or 0 for n in (job.added, job.updated, job.skipped))
                was, then = stats.get("job_processed"), stats.get("job_processed_age")
                before = None if was is None or then is None else (int(was), float(then))
                remaining = job_remaining(job.total, processed, age, before)
                stats["job_processed"] = processed
                stats["job_processed_age"] = None if age is None else round(age, 3)
            touch(conn, settings, batch_id, stats)
            conn.commit()
            if by_callback and not adopted:
                return Outcome(batch_id, None, run_id=batch.run_id,
                               note="woken by a callback, job still running")  # fmt: skip
            return Outcome(
                batch_id, Step.POLL, run_id=batch.run_id,
                countdown=poll_countdown(polls, age, remaining),
            )  # fmt: skip
        if job.state is JobState.FAILED:
            return job_failed(conn, settings, batch, f"job {job.id} FAILED")
        stats.update(
            download_url=job.download_url, added=job.added, updated=job.updated,
            skipped_by_zoho=job.skipped,
        )  # fmt: skip
        done = advance(
            conn, settings, batch, BatchState.JOB_CREATED, BatchState.JOB_DONE, Step.RECONCILE,
            stats=stats,
        )  # fmt: skip
        if done.next_step is not Step.RECONCILE or batch.run_id is None:
            return done
        # the job's slot is free: a batch waiting for it creates its job now, and the run's
        # next batch is prepared while this one reconciles
        return replace(done, more=True, wake=waiting_for_slot(conn, settings, batch.run_id))


def reconcile(conn: Connection, settings: Settings, client: ZohoClient, batch_id: int) -> Outcome:
    """``job_done`` → ``reconciled``: the result file decides each row, in one transaction.

    ADDED/UPDATED → ``mark_synced`` with the record id (version-checked: a row edited since its
    claim stays pending); SKIPPED/UNPROCESSED → ``record_row_errors`` (held back at once or
    sent again, by their code's class in ``pipeline.zoho.codes``); the claims are released.
    One summary log line per batch.
    A result that cannot be had or read → :func:`_step_error`.
    """
    started = time.monotonic()
    with batch_lock(conn, batch_id):
        batch = load(conn, settings, batch_id)
        if batch is None or batch.state is not BatchState.JOB_DONE:
            return nothing(batch_id, batch and batch.state)
        try:
            ok, refused = _read_result(settings, client, batch)
        except (FatalZohoError, zipfile.BadZipFile, csv.Error, UnicodeDecodeError) as exc:
            return step_error(conn, settings, batch, Step.RECONCILE, str(exc) or repr(exc))
        marked = mark_synced(conn, settings, batch_id, ok)
        errors = record_row_errors(conn, settings, batch_id, refused)
        if zoho_fields.refused_for_data(e.code for e in refused):
            zoho_fields.mark_stale(client)
        transient = sum(1 for e in refused if codes.is_transient(e.code))
        credits = _batch_credits(conn, settings, batch_id)
        seconds = (datetime.now(UTC) - batch.created_at).total_seconds()
        stats = {
            **batch.stats, "ok": marked.marked, "stale": marked.stale,
            "errors": len(refused) - transient, "retry": transient,
            "quarantined": errors.quarantined,
            "credits": credits, "seconds": round(seconds, 3),
        }  # fmt: skip
        ledger.transition(conn, settings, batch_id, BatchState.JOB_DONE, stats=stats)
        finished = ledger.finish_batch(conn, settings, batch_id, BatchState.RECONCILED)
        conn.commit()
    if not finished:
        return nothing(batch_id, "changed meanwhile")
    cleanup(settings, batch)
    log.info(
        "batch %s reconciled: sent %s / ok %s / skipped %s / failed %s (stale %s, retry %s),"
        " credits %s, %.1f s (reconcile %.2f s)",
        batch_id, stats.get("sent", batch.row_count), marked.marked,
        len(refused), len(refused) - transient, marked.stale, transient,
        credits, seconds, time.monotonic() - started,
    )  # fmt: skip
    return after_finish(batch, "reconciled")


def _read_result(
    settings: Settings, client: ZohoClient, batch: Batch
) -> tuple[list[tuple[str, str | None]], list[RowError]]:
    """Download and read the batch's result: (ok keys with record ids, refused rows)."""
    url = batch.stats.get("download_url") or client.get_job(batch.job_id or "").download_url
    if not url:
        raise FatalZohoError("RESULT_FORMAT", f"job {batch.job_id} has no download URL")
    path = client.download_result(str(url), result_path(settings, batch.id))
    ok: list[tuple[str, str | None]] = []
    refused: list[RowError] = []
    for row in iter_result_rows(path, settings.mapping.unique_field):
        if row.ok:
            ok.append((row.key, row.record_id))
        else:
            refused.append(result_row_error(row))
    return ok, refused


def result_row_error(row: ResultRow) -> RowError:
    """A refused line of a bulk result as a row error: the first code decides the row's fate,
    the message names every code and field the line carries (Zoho's result has no message)."""
    if not row.errors:
        code = codes.UNPROCESSED_CODE if row.status is RowStatus.UNPROCESSED else codes.SKIPPED_CODE
        return RowError(row.key, code, None, f"bulk result: {row.status.value} without a code")
    first = row.errors[0]
    faults = "; ".join(
        f"{e.code} on {', '.join(e.fields)}" if e.fields else e.code for e in row.errors
    )
    return RowError(row.key, first.code, ",".join(first.fields) or None, f"bulk result: {faults}")


def _batch_credits(conn: Connection, settings: Settings, batch_id: int) -> int:
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT coalesce(sum(credits), 0) FROM {} WHERE batch_id = %s").format(
                table(settings, "credit_ledger")
            ),
            (batch_id,),
        )
        return int(cur.fetchone()[0])  # type: ignore[index]
