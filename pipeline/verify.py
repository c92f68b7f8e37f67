"""``ordersync verify``: read back what we wrote (Bulk Read) and compare it with the legacy table.

A verification exports the module with Bulk Read (one job per 200,000 records, 50 credits each:
never one GET per 200 records), then compares it with the legacy table by the unique field
(``parent_id``), field by field, through the sync's own serialiser (:mod:`pipeline.serialize`),
so a value counts as equal exactly when the sync would have sent it unchanged. It reports:

* **missing**: synced legacy rows with no Zoho record (pending rows are not counted: the sync
  is about to send them);
* **duplicates**: a ``parent_id`` held by more than one Zoho record;
* **strays**: Zoho records whose ``parent_id`` has no legacy row;
* **differences**: fields whose Zoho value is not the legacy value. When the record was last
  modified by someone other than our API user (``Modified_By``), the difference is **drift**:
  an edit made in Zoho after our last write. ``zoho_wins`` names the fields where such an edit
  is kept and only reported; elsewhere the legacy value wins.

``--repair`` makes the missing rows and the rows with a legacy-wins difference pending again
(:func:`pipeline.legacy.mark.mark_pending`), so the normal sync resends them at the normal
prices. Duplicates and strays are only reported (deleting records is a separate, opt-in step).

The work is staged so a Celery task never waits: :func:`start` records a verification and
creates the first read job; :func:`advance` does one step (check the job; when done, download
its page and start the next page, or compare and finish) and says whether to come back. The
command line calls :func:`advance` in a loop; the task re-schedules itself with a countdown.
Every step's state is in ``<ledger>.verifications``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from pathlib import Path
from typing import Any

from psycopg2 import sql
from psycopg2.extensions import connection as Connection
from psycopg2.extras import Json

from pipeline.legacy.mark import mark_pending
from pipeline.legacy.names import Names
from pipeline.mapping import FieldSpec, FieldType, Mapping
from pipeline.serialize import select_list, session_timezone_sql, text_expression
from pipeline.settings import Settings
from pipeline.zoho import limits
from pipeline.zoho.bulkread import (
    ReadState,
    create_read_job,
    current_user_id,
    download_read_result,
    get_read_job,
    read_csv_rows,
)
from pipeline.zoho.client import ZohoClient
from pipeline.zoho.errors import CreditBudgetExceeded

log = logging.getLogger(__name__)

SYSTEM_FIELDS = ("Modified_Time", "Modified_By")


class VerifyState(StrEnum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class Winner(StrEnum):
    LEGACY = "legacy"  # the row is re-queued by --repair
    ZOHO = "zoho"  # the Zoho edit is kept and reported


@dataclass(frozen=True)
class FieldDiff:
    """One field of one record whose Zoho value is not the legacy value."""

    parent_id: str
    zoho_id: str
    field: str
    legacy: str | None
    zoho: str | None
    drift: bool  # last modified in Zoho by someone else than our API user
    winner: Winner
    modified_time: str | None = None


@dataclass(frozen=True)
class Report:
    """What a verification found. Lists are sorted, so two runs over the same data are equal."""

    legacy_rows: int
    pending_rows: int
    zoho_records: int
    missing: tuple[str, ...] = ()
    duplicates: dict[str, tuple[str, ...]] = field(default_factory=dict)
    strays: tuple[tuple[str, str], ...] = ()  # (parent_id, zoho_id)
    differences: tuple[FieldDiff, ...] = ()

    @property
    def drift(self) -> tuple[FieldDiff, ...]:
        return tuple(d for d in self.differences if d.drift)

    @property
    def requeue_keys(self) -> tuple[str, ...]:
        """Rows ``--repair`` makes pending: missing ones and those a legacy value must win."""
        keys = set(self.missing)
        keys.update(d.parent_id for d in self.differences if d.winner is Winner.LEGACY)
        return tuple(sorted(keys))

    @property
    def clean(self) -> bool:
        return not (self.missing or self.duplicates or self.strays or self.differences)

    def as_dict(self) -> dict[str, Any]:
        return {
            "legacy_rows": self.legacy_rows,
            "pending_rows": self.pending_rows,
            "zoho_records": self.zoho_records,
            "missing": list(self.missing),
            "duplicates": {k: list(v) for k, v in self.duplicates.items()},
            "strays": [{"parent_id": p, "zoho_id": z} for p, z in self.strays],
            "differences": [{**asdict(d), "winner": d.winner.value} for d in self.differences],
            "counts": self.counts(),
            "requeue": list(self.requeue_keys),
        }

    def counts(self) -> dict[str, int]:
        return {
            "missing": len(self.missing),
            "duplicates": len(self.duplicates),
            "strays": len(self.strays),
            "differences": len(self.differences),
            "differing_records": len({d.parent_id for d in self.differences}),
            "drift": len(self.drift),
        }


# ---- pure decisions ---------------------------------------------------------------------------
def estimate_credits(records: int) -> int:
    """Credits of a verification of ``records`` records: one 50-credit job per 200k, plus the
    1-credit current-user call; status checks and downloads are free (contract §7.2)."""
    return limits.bulk_read_credits(records) + limits.CURRENT_USER_CREDITS


def pages_for(records: int) -> int:
    return max(1, math.ceil(records / limits.BULK_READ_PAGE_RECORDS))


def same_value(spec: FieldSpec, legacy: str | None, zoho: str | None) -> bool:
    """Whether Zoho's CSV text holds the value the sync sends for ``legacy`` (canonical text).

    Empty is NULL on both sides; numbers compare exactly as decimals (Zoho drops trailing
    zeros); datetimes compare as instants (Zoho may write another offset).
    """
    a = legacy if legacy not in (None, "") else None
    b = zoho if zoho not in (None, "") else None
    if a is None or b is None:
        return a is b
    kind = spec.type
    if kind in (FieldType.DECIMAL, FieldType.CURRENCY, FieldType.INTEGER):
        try:
            return Decimal(a) == Decimal(b)
        except InvalidOperation:
            return a == b
    if kind is FieldType.DATETIME:
        try:
            return datetime.fromisoformat(a) == datetime.fromisoformat(b)
        except ValueError:
            return a == b
    if kind is FieldType.BOOLEAN:
        return a.lower() == b.lower()
    return a == b


def compare(
    mapping: Mapping,
    legacy: dict[str, tuple[bool, Sequence[str | None]]],
    zoho: Iterable[dict[str, str]],
    *,
    our_user: str | None,
    zoho_wins: Iterable[str] = (),
) -> Report:
    """Compare legacy rows ``{key: (synced, texts in mapping order)}`` with exported records.

    Pure: the whole verdict of a verification, testable without I/O.
    """
    wins = frozenset(zoho_wins)
    key_api = mapping.unique_field
    by_key: dict[str, list[dict[str, str]]] = {}
    total = 0
    for rec in zoho:
        total += 1
        by_key.setdefault(rec.get(key_api) or "", []).append(rec)
    duplicates = {k: tuple(sorted(r["Id"] for r in v)) for k, v in by_key.items()
                  if k and len(v) > 1}
    strays = sorted((k, r["Id"]) for k, v in by_key.items() if k not in legacy for r in v)
    missing: list[str] = []
    diffs: list[FieldDiff] = []
    pending = 0
    for key, (synced, texts) in legacy.items():
        if not synced:
            pending += 1
            continue
        recs = by_key.get(key)
        if not recs:
            missing.append(key)
            continue
        for rec in recs:
            drift = our_user is not None and rec.get("Modified_By", our_user) != our_user
            for spec, text in zip(mapping.fields, texts, strict=True):
                if spec.api_name == key_api:
                    continue
                got = rec.get(spec.api_name)
                if same_value(spec, text, got):
                    continue
                winner = Winner.ZOHO if drift and spec.api_name in wins else Winner.LEGACY
                diffs.append(FieldDiff(key, rec["Id"], spec.api_name, text, got or None, drift,
                                       winner, rec.get("Modified_Time") or None))
    diffs.sort(key=lambda d: (d.parent_id, d.zoho_id, d.field))
    return Report(len(legacy), pending, total, tuple(sorted(missing)), duplicates,
                  tuple(strays), tuple(diffs))


# ---- the ledger table -------------------------------------------------------------------------
def _table(settings: Settings) -> sql.Identifier:
    return Names(settings).ledger_table("verifications")


def ensure_table(conn: Connection, settings: Settings) -> None:
    """Create ``<ledger>.verifications`` if missing (in the caller's transaction)."""
    with conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(Names(settings).ledger))
        cur.execute(sql.SQL(
            """CREATE TABLE IF NOT EXISTS {} (
                   id bigserial PRIMARY KEY,
                   started_at timestamptz NOT NULL DEFAULT now(),
                   finished_at timestamptz NULL,
                   state text NOT NULL DEFAULT 'running',
                   repair boolean NOT NULL DEFAULT false,
                   zoho_wins text[] NOT NULL DEFAULT '{{}}',
                   credits_estimate int NOT NULL,
                   page int NOT NULL DEFAULT 1,
                   job_id text NULL,
                   files text[] NOT NULL DEFAULT '{{}}',
                   our_user text NULL,
                   report jsonb NULL,
                   requeued int NOT NULL DEFAULT 0,
                   error text NULL)"""
        ).format(_table(settings)))


@dataclass(frozen=True)
class Verification:
    """A row of ``<ledger>.verifications``."""

    id: int
    state: VerifyState
    repair: bool
    zoho_wins: tuple[str, ...]
    credits_estimate: int
    page: int
    job_id: str | None
    files: tuple[str, ...]
    our_user: str | None
    report: dict[str, Any] | None
    requeued: int
    error: str | None
    started_at: datetime
    finished_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["state"] = self.state.value
        out["started_at"] = self.started_at.isoformat()
        out["finished_at"] = self.finished_at.isoformat() if self.finished_at else None
        return out


_COLUMNS = ("id, state, repair, zoho_wins, credits_estimate, page, job_id, files, our_user, "
            "report, requeued, error, started_at, finished_at")


def _row(r: Sequence[Any]) -> Verification:
    return Verification(int(r[0]), VerifyState(r[1]), bool(r[2]), tuple(r[3]), int(r[4]),
                        int(r[5]), r[6], tuple(r[7]), r[8], r[9], int(r[10]), r[11], r[12], r[13])


def load(conn: Connection, settings: Settings, verification_id: int) -> Verification:
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT " + _COLUMNS + " FROM {} WHERE id = %s").format(
            _table(settings)), (verification_id,))
        r = cur.fetchone()
    if r is None:
        raise LookupError(f"no verification {verification_id}")
    return _row(r)


def latest(conn: Connection, settings: Settings, *, finished: bool = True) -> Verification | None:
    """The newest verification (finished ``done`` if ``finished``), or None."""
    ensure_table(conn, settings)
    where = "WHERE state = 'done'" if finished else ""
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT " + _COLUMNS + " FROM {} " + where +
                            " ORDER BY id DESC LIMIT 1").format(_table(settings)))
        r = cur.fetchone()
    return _row(r) if r else None


def _update(conn: Connection, settings: Settings, vid: int, **values: Any) -> None:
    sets = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in values)
    with conn.cursor() as cur:
        cur.execute(sql.SQL("UPDATE {} SET {} WHERE id = %(id)s").format(_table(settings), sets),
                    {**values, "id": vid})


# ---- legacy side ------------------------------------------------------------------------------
def legacy_count(conn: Connection, settings: Settings) -> int:
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(Names(settings).table))
        return int(cur.fetchone()[0])  # type: ignore[index]


def legacy_rows(conn: Connection, settings: Settings) -> dict[str, tuple[bool, list[str | None]]]:
    """Every legacy row as ``{unique-field text: (synced, canonical texts in mapping order)}``,
    read through the sync's serialiser in the org time zone."""
    n = Names(settings)
    mapping = settings.mapping
    out: dict[str, tuple[bool, list[str | None]]] = {}
    with conn:
        with conn.cursor() as tz:
            tz.execute(session_timezone_sql(settings.org_timezone))
        with conn.cursor(name="ordersync_verify") as cur:
            cur.itersize = 10_000
            cur.execute(sql.SQL("SELECT {}, {}, {} FROM {}").format(
                text_expression(mapping.key_field), n.synced, select_list(mapping), n.table))
            for row in cur:
                out[str(row[0])] = (bool(row[1]), list(row[2:]))
    return out


# ---- the stages -------------------------------------------------------------------------------
def _fields(mapping: Mapping) -> list[str]:
    return [*mapping.api_names, *SYSTEM_FIELDS]


def start(
    conn: Connection,
    settings: Settings,
    client: ZohoClient,
    *,
    repair: bool = False,
    zoho_wins: Iterable[str] = (),
) -> Verification:
    """Record a verification and create its first read job, after checking the budget.

    The cost is stated up front (:func:`estimate_credits` of the legacy row count) and must fit
    what the credit budget leaves, net of the reserve; otherwise ``CreditBudgetExceeded`` is
    raised before anything is sent. Unknown ``zoho_wins`` fields raise ``ValueError``.
    """
    wins = tuple(sorted(set(zoho_wins)))
    unknown = [f for f in wins if f not in settings.mapping.api_names]
    if unknown:
        raise ValueError(f"zoho_wins names fields that are not mapped: {', '.join(unknown)}")
    with conn:
        ensure_table(conn, settings)
        estimate = estimate_credits(legacy_count(conn, settings))
    left = client.credits.remaining()
    if left < estimate:
        raise CreditBudgetExceeded(
            "CREDIT_BUDGET", f"verify needs about {estimate} credits, {left} are left in the 24 h"
            " budget (after the reserve)", {"needed": estimate, "left": left})
    with conn, conn.cursor() as cur:
        cur.execute(sql.SQL(
            "INSERT INTO {} (repair, zoho_wins, credits_estimate) VALUES (%s, %s, %s)"
            " RETURNING id").format(_table(settings)), (repair, list(wins), estimate))
        vid = int(cur.fetchone()[0])  # type: ignore[index]
    try:
        our_user = current_user_id(client)
        job_id = create_read_job(client, _fields(settings.mapping), page=1)
    except Exception as exc:
        with conn:
            _update(conn, settings, vid, state=VerifyState.FAILED.value, error=str(exc),
                    finished_at=datetime.now().astimezone())
        raise
    with conn:
        _update(conn, settings, vid, our_user=our_user, job_id=job_id)
    log.info("verification %s: read job %s, about %s credits", vid, job_id, estimate)
    return load(conn, settings, vid)


def advance(conn: Connection, settings: Settings, client: ZohoClient,
            verification_id: int) -> Verification:
    """One step of a running verification; returns it (``state`` says whether to come back).

    Idempotent per step: a job already downloaded is not downloaded again, a page is only
    started once its predecessor's file is recorded.
    """
    v = load(conn, settings, verification_id)
    if v.state is not VerifyState.RUNNING or v.job_id is None:
        return v
    job = get_read_job(client, v.job_id)
    if not job.finished:
        return v
    if job.state is ReadState.FAILED:
        with conn:
            _update(conn, settings, v.id, state=VerifyState.FAILED.value,
                    error=f"read job {job.id} failed", finished_at=datetime.now().astimezone())
        return load(conn, settings, v.id)
    dest = Path(settings.work_dir) / "verify" / f"{v.id}-page{job.page}.zip"
    if str(dest) not in v.files:
        download_read_result(client, job.id, dest)
        with conn:
            _update(conn, settings, v.id, files=[*v.files, str(dest)])
    if job.more_records:
        next_job = create_read_job(client, _fields(settings.mapping), page=job.page + 1)
        with conn:
            _update(conn, settings, v.id, page=job.page + 1, job_id=next_job)
        return load(conn, settings, v.id)
    return finish(conn, settings, v.id)


def _exported(files: Sequence[str]) -> Iterator[dict[str, str]]:
    for path in files:
        yield from read_csv_rows(path)


def finish(conn: Connection, settings: Settings, verification_id: int) -> Verification:
    """Compare the downloaded pages with the legacy table, record the report, repair if asked."""
    v = load(conn, settings, verification_id)
    legacy = legacy_rows(conn, settings)
    report = compare(settings.mapping, {k: (s, t) for k, (s, t) in legacy.items()},
                     _exported(v.files), our_user=v.our_user, zoho_wins=v.zoho_wins)
    with conn:
        requeued = mark_pending(conn, settings, report.requeue_keys) if v.repair else 0
        _update(conn, settings, v.id, state=VerifyState.DONE.value, report=Json(report.as_dict()),
                requeued=requeued, job_id=None, finished_at=datetime.now().astimezone())
    counts = report.counts()
    log.info(
        "verification %s done: %s records, missing %s, duplicates %s, strays %s, differing %s"
        " (drift %s), requeued %s", v.id, report.zoho_records, counts["missing"],
        counts["duplicates"], counts["strays"], counts["differences"], counts["drift"], requeued,
    )
    for path in v.files:
        Path(path).unlink(missing_ok=True)
    return load(conn, settings, v.id)


def run_to_end(
    conn: Connection,
    settings: Settings,
    client: ZohoClient,
    *,
    repair: bool = False,
    zoho_wins: Iterable[str] = (),
    poll: float = 2.0,
    timeout: float = 3600.0,
) -> Verification:
    """Start a verification and advance it until it ends (for the command line, not a task).

    Raises ``TimeoutError`` if the export is not done within ``timeout`` seconds (the
    verification stays ``running``; a later ``advance`` can finish it).
    """
    import time

    v = start(conn, settings, client, repair=repair, zoho_wins=zoho_wins)
    deadline = time.monotonic() + timeout
    while v.state is VerifyState.RUNNING:
        if time.monotonic() > deadline:
            raise TimeoutError(f"verification {v.id} not done after {timeout:.0f} s")
        time.sleep(poll)
        v = advance(conn, settings, client, v.id)
    return v
