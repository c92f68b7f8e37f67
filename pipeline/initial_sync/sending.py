"""A bulk batch on its way to Zoho: render the zip, upload it, create the job (never twice)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from psycopg2 import sql
from psycopg2.extensions import connection as Connection

from pipeline import ledger, progress
from pipeline.initial_sync.batch import (
    advance,
    after_finish,
    batch_lock,
    job_failed,
    load,
    nothing,
    seconds_since,
    set_fields,
    table,
    touch,
)
from pipeline.initial_sync.callbacks import (
    fresh_token,
    token_digest,
)
from pipeline.initial_sync.decisions import (
    CALLBACK_PREFIX,
    CALLBACK_RECHECK,
    JOB_SLOT_RECHECK,
    Outcome,
    Step,
    callback_wait,
    job_slot_countdown,
    poll_countdown,
)
from pipeline.ledger import Batch, BatchState
from pipeline.legacy.render import render_claimed, sha256_file
from pipeline.settings import Settings
from pipeline.zoho.client import ZohoClient
from pipeline.zoho.errors import AmbiguousJobCreation, FatalZohoError, RateLimited, ZohoError

log = logging.getLogger(__name__)


def zip_is_intact(batch: Batch) -> bool:
    """Is the batch's zip on disk with the checksum recorded for it?"""
    if not batch.zip_path or not batch.checksum:
        return False
    path = Path(batch.zip_path)
    return path.is_file() and sha256_file(path) == batch.checksum


def render(conn: Connection, settings: Settings, batch_id: int) -> Outcome:
    """``extracted`` → ``rendered``: the zip on disk, its checksum and row count recorded."""
    with batch_lock(conn, batch_id):
        batch = load(conn, settings, batch_id)
        if batch is None or batch.state is not BatchState.EXTRACTED:
            return nothing(batch_id, batch and batch.state)
        rendered = render_claimed(conn, settings, batch)
        stats = {**batch.stats, "claimed": batch.row_count, "sent": rendered.row_count}
        if rendered.row_count == 0:  # every claimed row changed since: they go in a later batch
            ledger.transition(conn, settings, batch_id, batch.state, stats=stats)
            ledger.finish_batch(conn, settings, batch_id, BatchState.RECONCILED)
            conn.commit()
            rendered.path.unlink(missing_ok=True)
            return after_finish(batch, "no row left at its claimed version")
        return advance(
            conn, settings, batch, BatchState.EXTRACTED, BatchState.RENDERED, Step.UPLOAD,
            zip_path=str(rendered.path), zip_bytes=rendered.zip_bytes, checksum=rendered.checksum,
            stats=stats,
        )  # fmt: skip


def upload(conn: Connection, settings: Settings, client: ZohoClient, batch_id: int) -> Outcome:
    """``rendered`` → ``uploaded`` with Zoho's ``file_id``. Never uploads a batch twice: the
    file id is recorded with the state, and a batch past ``rendered`` is left alone.
    """
    with batch_lock(conn, batch_id):
        batch = load(conn, settings, batch_id)
        if batch is None or batch.state is not BatchState.RENDERED:
            return nothing(batch_id, batch and batch.state)
        if not zip_is_intact(batch):
            log.warning("batch %s: zip missing or altered; rendering it again", batch_id)
            rendered = render_claimed(conn, settings, batch)
            set_fields(
                conn, settings, batch_id, zip_path=str(rendered.path), zip_bytes=rendered.zip_bytes,
                checksum=rendered.checksum, stats={**batch.stats, "sent": rendered.row_count},
            )  # fmt: skip
            conn.commit()
            batch = load(conn, settings, batch_id)
            assert batch is not None
        try:
            file_id = client.upload(
                Path(batch.zip_path or ""), run_id=batch.run_id, batch_id=batch.id
            )
        except FatalZohoError as exc:  # refused (too large, bad file): count it like a job
            return job_failed(conn, settings, batch, f"upload refused: {exc}")
        return advance(
            conn, settings, batch, BatchState.RENDERED, BatchState.UPLOADED, Step.CREATE_JOB,
            file_id=file_id,
        )  # fmt: skip


def job_slot_free(conn: Connection, settings: Settings, batch: Batch) -> bool:
    """Has the batch's run fewer than ``batches_in_flight`` jobs created or being created
    (intent recorded), this batch's own aside? Locks the run's row until the caller commits,
    so two batches never both take the last slot."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT 1 FROM {} WHERE id = %s FOR UPDATE").format(table(settings, "runs")),
            (batch.run_id,),
        )
        cur.execute(
            sql.SQL(
                "SELECT count(*) FROM {} WHERE run_id = %s AND id <> %s AND (state = %s"
                " OR (state = %s AND job_requested_at IS NOT NULL))"
            ).format(table(settings, "batches")),
            (batch.run_id, batch.id, BatchState.JOB_CREATED.value, BatchState.UPLOADED.value),
        )
        return int(cur.fetchone()[0]) < settings.batches_in_flight  # type: ignore[index]


def waiting_for_slot(conn: Connection, settings: Settings, run_id: int) -> int | None:
    """The run's oldest uploaded batch waiting for a job slot (no create-job sent), if any."""
    with conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT id FROM {} WHERE run_id = %s AND state = %s AND job_requested_at IS NULL"
                " ORDER BY id LIMIT 1"
            ).format(table(settings, "batches")),
            (run_id, BatchState.UPLOADED.value),
        )
        row = cur.fetchone()
    return None if row is None else int(row[0])


def expected_callback_wait(conn: Connection, settings: Settings, batch: Batch) -> float:
    """Seconds a job creation of unknown outcome waits for the job's callback: 0 without a
    callback URL, else :func:`callback_wait` of the batch's rows at the speed of the ledger's
    finished jobs (job requested → reconciled; else ``progress.ASSUMED_JOB_ROWS_PER_S``)."""
    if not settings.zoho.callback_url:
        return 0.0
    rows, seconds = progress.read_finished_jobs(conn, settings)
    speed = rows / seconds if rows > 0 and seconds > 0 else progress.ASSUMED_JOB_ROWS_PER_S
    return callback_wait(batch.row_count, speed, settings.job_callback_wait)


def create_job(
    conn: Connection,
    settings: Settings,
    client: ZohoClient,
    batch_id: int,
    *,
    new_token: Any = None,
) -> Outcome:
    """``uploaded`` → ``job_created``: record the intent, create the job, record its id.

    With a callback URL configured, the job calls back on ``<callback_url>/zoho/callback/<token>``
    with a fresh token per attempt (``new_token()``; its digest is stored). An earlier intent
    without a job id is waited on (callback) for as long as the job could take
    (:func:`expected_callback_wait`, at most ``settings.job_callback_wait``) before a new job
    is created.
    """
    with batch_lock(conn, batch_id):
        batch = load(conn, settings, batch_id)
        if batch is None or batch.state is not BatchState.UPLOADED:
            return nothing(batch_id, batch and batch.state)
        stats = dict(batch.stats)
        if batch.job_requested_at is not None:
            if batch.job_hint:  # a callback named a job: the poll step checks and takes it
                return Outcome(batch_id, Step.POLL, run_id=batch.run_id, note="callback hint")
            waited = seconds_since(batch.job_requested_at)
            wait = expected_callback_wait(conn, settings, batch)
            if waited < wait:
                touch(conn, settings, batch_id, stats)
                conn.commit()
                countdown = min(CALLBACK_RECHECK, wait - waited)
                return Outcome(
                    batch_id, Step.CREATE_JOB, run_id=batch.run_id, countdown=countdown,
                    note="waiting for the job's callback",
                )  # fmt: skip
            stats["jobs_recreated"] = int(stats.get("jobs_recreated", 0)) + 1
            log.warning(
                "batch %s: no job id %.0f s after create-job was sent; creating the job again",
                batch_id, waited,
            )  # fmt: skip
        if batch.run_id is not None and not job_slot_free(conn, settings, batch):
            stats.setdefault("slot_wait_from", round(time.time(), 3))  # epoch s: for status
            touch(conn, settings, batch_id, stats)
            conn.commit()
            return Outcome(batch_id, Step.CREATE_JOB, run_id=batch.run_id,
                           countdown=JOB_SLOT_RECHECK,
                           note="waiting for one of the run's jobs to end")  # fmt: skip
        token: str | None = None
        callback_url: str | None = None
        if settings.zoho.callback_url:
            token = new_token() if new_token is not None else fresh_token()
            callback_url = settings.zoho.callback_url.rstrip("/") + CALLBACK_PREFIX + token
        # the intent, committed before anything is sent
        digest = None if token is None else token_digest(token)
        ledger.record_job_intent(conn, settings, batch_id, digest, stats)
        conn.commit()
        try:
            job_id = client.create_upsert_job(
                batch.file_id or "", settings.mapping, callback_url=callback_url,
                run_id=batch.run_id, batch_id=batch_id,
            )  # fmt: skip
        except AmbiguousJobCreation as exc:
            log.warning("batch %s: %s; waiting for the job's callback", batch_id, exc)
            wait = expected_callback_wait(conn, settings, batch)
            return Outcome(batch_id, Step.CREATE_JOB, run_id=batch.run_id,
                           countdown=min(CALLBACK_RECHECK, wait), note="ambiguous")  # fmt: skip
        except FatalZohoError as exc:  # refused: no job exists
            set_fields(conn, settings, batch_id, job_requested_at=None, callback_digest=None)
            conn.commit()
            return job_failed(conn, settings, batch, f"create-job refused: {exc}")
        except RateLimited as exc:  # Zoho's limit on running jobs (or credits): none created
            waits = int(stats.get("job_slot_waits", 0)) + 1
            set_fields(conn, settings, batch_id, job_requested_at=None, callback_digest=None,
                       stats={**stats, "job_slot_waits": waits})  # fmt: skip
            conn.commit()
            countdown = job_slot_countdown(waits, getattr(exc, "retry_after", None))
            log.warning(
                "batch %s: Zoho refused the job for now (%s: %s); asking again in %.1f s",
                batch_id, exc.code, exc.message, countdown,
            )  # fmt: skip
            return Outcome(batch_id, Step.CREATE_JOB, run_id=batch.run_id, countdown=countdown,
                           note="waiting for a job slot (429)")  # fmt: skip
        except ZohoError:  # transient and not sent (budget, no slot): no job exists
            set_fields(conn, settings, batch_id, job_requested_at=None, callback_digest=None)
            conn.commit()
            raise
        return advance(
            conn, settings, batch, BatchState.UPLOADED, BatchState.JOB_CREATED, Step.POLL,
            countdown=poll_countdown(0), job_id=job_id, job_hint=None,
            stats={**stats, "polls": 0},
        )  # fmt: skip
