"""What a run's batches are doing now, and when the run should end, from the expected job time.

A run's ``rows_done`` moves only when a batch is reconciled: with 25,000-row bulk jobs that is a
minute or more after the start (hours on a busy Zoho), and until then a rate over rows done says
nothing. This reads the run's open batches instead: rows handed to Zoho, jobs running, how far
Zoho says each job is (``job_processed``, recorded by the poll step from the job's counts), and
prices what is left at a job speed: Zoho's own counts for the running jobs if it reports them,
else the speed of bulk jobs this ledger finished before, else :data:`ASSUMED_JOB_ROWS_PER_S`.
The estimate lays the remaining work on ``batches_in_flight`` parallel jobs.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from psycopg2 import sql
from psycopg2.extensions import connection as Connection

from pipeline.ledger import BatchKind, BatchState
from pipeline.legacy.connection import connect
from pipeline.settings import Settings

# Zoho documents no bulk-job speed. zohosim's realistic speed (25,000 rows a minute) is the
# assumption until a job has reported counts or one of this ledger's jobs has finished.
ASSUMED_JOB_ROWS_PER_S = 25_000 / 60
# Open batches whose rows Zoho holds (uploaded, or a job on them).
AT_ZOHO = (BatchState.UPLOADED, BatchState.JOB_CREATED, BatchState.JOB_DONE)


class SpeedSource(StrEnum):
    """Where a job speed came from."""

    ZOHO = "Zoho's job counts"
    HISTORY = "finished jobs"
    ASSUMED = "assumed"


@dataclass(frozen=True)
class OpenBatch:
    """An unfinished batch of the run, as the estimate needs it."""

    kind: BatchKind
    state: BatchState
    rows: int
    job_processed: int | None = None  # rows Zoho said it had done at the last poll, if it said
    job_seconds: float | None = None  # from the job's request to that poll
    since_poll: float = 0.0  # seconds since that poll


@dataclass(frozen=True)
class JobSpeed:
    rows_per_s: float
    source: SpeedSource
    jobs: int = 0  # jobs it was measured on


def job_speed(batches: list[OpenBatch], finished_rows: int, finished_s: float) -> JobSpeed:
    """Rows a second of one bulk job: the running jobs' counts, else finished jobs, else assumed."""
    counted = [
        b for b in batches
        if b.job_processed and b.job_seconds and b.state is BatchState.JOB_CREATED
    ]  # fmt: skip
    seconds = sum(b.job_seconds or 0.0 for b in counted)
    if counted and seconds > 0:
        rows = sum(b.job_processed or 0 for b in counted)
        return JobSpeed(rows / seconds, SpeedSource.ZOHO, len(counted))
    if finished_rows > 0 and finished_s > 0:
        return JobSpeed(finished_rows / finished_s, SpeedSource.HISTORY)
    return JobSpeed(ASSUMED_JOB_ROWS_PER_S, SpeedSource.ASSUMED)


def estimate_seconds(
    batches: list[OpenBatch], unclaimed_rows: int, batch_size: int, slots: int, speed: float
) -> float:
    """Seconds until the last job ends: open bulk batches first (less what Zoho has done), then
    the unclaimed rows in jobs of ``batch_size``, on ``slots`` jobs at a time at ``speed``.
    A job Zoho reported on is taken to have gone on at ``speed`` since that poll. Upsert
    batches (100 rows a call) count as no time."""
    if speed <= 0:
        raise ValueError("speed must be positive")
    work = []
    for b in batches:
        if b.kind is not BatchKind.BULK or b.state is BatchState.JOB_DONE:
            continue
        done = 0.0 if b.job_processed is None else b.job_processed + speed * b.since_poll
        work.append(max(0.0, b.rows - done) / speed)
    if unclaimed_rows > 0:
        full, rest = divmod(unclaimed_rows, max(1, batch_size))
        work += [batch_size / speed] * full + ([rest / speed] if rest else [])
    ends = [0.0] * max(1, slots)
    for seconds in work:  # in order, each on the job slot that frees first
        heapq.heapreplace(ends, ends[0] + seconds)
    return max(ends)


def read_open_batches(conn: Connection, settings: Settings, run_id: int) -> list[OpenBatch]:
    """The run's unfinished batches (in the caller's transaction)."""
    batches = sql.Identifier(settings.source.ledger_schema, "batches")
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT kind, state, row_count, (stats->>'job_processed')::bigint,"
                " extract(epoch FROM updated_at - job_requested_at)::float8,"
                " greatest(0, extract(epoch FROM now() - updated_at))::float8"
                " FROM {} WHERE run_id = %s AND state <> ALL(%s) ORDER BY id"
            ).format(batches),
            (run_id, [s.value for s in BatchState if s.finished]),
        )
        return [
            OpenBatch(BatchKind(kind), BatchState(state), int(rows),
                      None if done is None else int(done), seconds, float(since or 0.0))
            for kind, state, rows, done, seconds, since in cur.fetchall()
        ]  # fmt: skip


def read_finished_jobs(conn: Connection, settings: Settings) -> tuple[int, float]:
    """Rows and seconds (job requested → batch reconciled) of the ledger's finished bulk jobs."""
    batches = sql.Identifier(settings.source.ledger_schema, "batches")
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT coalesce(sum(row_count), 0),"
                " coalesce(sum(extract(epoch FROM finished_at - job_requested_at)), 0)::float8"
                " FROM {} WHERE kind = %s AND state = %s AND job_requested_at IS NOT NULL"
                " AND finished_at IS NOT NULL"
            ).format(batches),
            (BatchKind.BULK.value, BatchState.RECONCILED.value),
        )
        rows, seconds = cur.fetchone()  # type: ignore[misc]
    return int(rows), float(seconds)


def in_flight(
    batches: list[OpenBatch], speed: JobSpeed, progress: dict[str, Any], settings: Settings
) -> dict[str, Any]:
    """The keys :func:`activity` adds to a ``run_progress`` dict (pure)."""
    at_zoho = [b for b in batches if b.kind is BatchKind.BULK and b.state in AT_ZOHO]
    running = [b for b in at_zoho if b.state is BatchState.JOB_CREATED]
    reported = [b for b in running if b.job_processed is not None]
    open_rows = sum(b.rows for b in batches)
    total, done = int(progress.get("rows_total") or 0), int(progress.get("rows_done") or 0)
    unclaimed = max(0, total - done - open_rows)
    eta = estimate_seconds(
        batches, unclaimed, settings.batch_size, settings.batches_in_flight, speed.rows_per_s
    )
    return {
        "rows_preparing": sum(b.rows for b in batches if b.state not in AT_ZOHO),
        "rows_at_zoho": sum(b.rows for b in at_zoho),
        "jobs_running": len(running),
        "jobs_reported": len(reported),
        "job_rows_processed": sum(b.job_processed or 0 for b in reported),
        "job_rows_reported": sum(b.rows for b in reported),
        "job_rows_per_s": round(speed.rows_per_s, 1),
        "job_speed_source": speed.source.value,
        "eta_jobs_s": round(eta, 1) if batches or unclaimed else None,
    }


def activity(settings: Settings, run_id: int, progress: dict[str, Any]) -> dict[str, Any]:
    """``progress`` (a ``run_progress`` dict) plus what its open batches and jobs are doing;
    unchanged once the run has ended."""
    if progress.get("state") != "running":
        return progress
    conn = connect(settings, application="ordersync-progress")
    try:
        with conn:
            batches = read_open_batches(conn, settings, run_id)
            finished_rows, finished_s = read_finished_jobs(conn, settings)
    finally:
        conn.close()
    speed = job_speed(batches, finished_rows, finished_s)
    return {**progress, **in_flight(batches, speed, progress, settings)}


def format_activity(progress: dict[str, Any]) -> str | None:
    """One line on what is in flight, or None when the progress dict has no such keys."""
    if "jobs_running" not in progress:
        return None
    parts = []
    if progress["rows_preparing"]:
        parts.append(f"{progress['rows_preparing']:,} rows being prepared")
    parts.append(f"{progress['rows_at_zoho']:,} rows uploaded to Zoho")
    jobs = progress["jobs_running"]
    parts.append(f"{jobs} bulk job{'' if jobs == 1 else 's'} running")
    if progress["jobs_reported"]:
        processed, of = progress["job_rows_processed"], progress["job_rows_reported"]
        share = 100.0 * processed / of if of else 0.0
        parts.append(f"Zoho reports {processed:,} of {of:,} rows processed ({share:.0f}%)")
    rate = progress["job_rows_per_s"]
    speed = f"{math.floor(rate):,} rows/s a job ({progress['job_speed_source']})"
    return "in flight: " + ", ".join(parts) + f" | job speed {speed}"
