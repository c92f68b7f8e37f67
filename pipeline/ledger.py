"""The ledger: durable state of every run and batch, in the ``ordersync`` schema of the legacy DB.

Tables (created by :func:`ensure_tables`, called from ``ordersync db install``):

``runs``
    One sync run (``kind``: interval, realtime, manual) with its state and a free ``stats`` jsonb.
``batches``
    One unit of work sent to Zoho: a bulk job of up to 25,000 rows or a near-real-time upsert
    of up to 100. A bulk batch moves ``extracted → uploaded → job_created → job_done →
    reconciled`` (an initial-sync batch, claimed before it is rendered, passes through
    ``rendered`` after ``extracted``: see ``pipeline.initial_sync``); any step may end in
    ``failed`` (``error`` says why). A realtime batch goes
    ``extracted → reconciled`` (or ``failed``). A batch is born ``extracted``: claiming its
    rows and writing its zip are one transaction, so a crash leaves no half-claimed batch.
    Each step records its result here (``zip_path``/``checksum``/``row_count`` after
    extraction, ``file_id`` after upload, ``job_id`` when the job is created, …) so a
    repeated step can see it is done and a sweeper can find batches that stopped moving
    (``updated_at``).
``batches.keys`` / ``batches.versions`` (and the view ``batch_rows``)
    The claim: the legacy keys (as text) and the ``sync_version`` of every row a batch carries,
    as two parallel arrays on the batch (one row written per batch, not 25,000: measured
    ~25 ms against ~220 ms for a row per claimed row with a unique index). A bulk batch also
    records ``key_lo``/``key_hi``: while it is unfinished, every key in that range is claimed;
    a realtime batch claims exactly its keys. Finishing a batch (:func:`finish_batch`)
    releases its claims. The view ``batch_rows (batch_id, row_key, version, released_at)``
    shows the claims one row each.
``claim_lock``
    An empty table locked (SHARE ROW EXCLUSIVE) by each claiming transaction: claims are
    serialised, so two extractors never claim the same row.
``tombstones``
    Deleted legacy rows whose Zoho record is still to be deleted (``sync.deletes``, opt-in):
    the key, the ``zoho_id`` it had (filled in later by marking when the row was in flight),
    attempts and the last Zoho error.
``row_errors``
    The latest Zoho error of each row (code, field, message), the row version it was about, an
    attempt count for that version, and ``quarantined`` once attempts reach ``max_attempts``.
    A quarantined row is held back only while its version is unchanged: editing the row bumps
    the version and lifts the quarantine by itself. Marking a row synced deletes its error.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from psycopg2 import sql
from psycopg2.extensions import connection as Connection
from psycopg2.extras import Json

from pipeline.arrays import int_array, text_array
from pipeline.settings import Settings
from pipeline.zoho import codes

log = logging.getLogger(__name__)


class BatchKind(StrEnum):
    """How a batch goes to Zoho."""

    BULK = "bulk"
    REALTIME = "realtime"


class BatchState(StrEnum):
    """Where a batch stands; see the module docstring for the transitions."""

    EXTRACTED = "extracted"
    RENDERED = "rendered"  # zip on disk, checksum recorded (bulk batches of the initial sync)
    UPLOADED = "uploaded"
    JOB_CREATED = "job_created"
    JOB_DONE = "job_done"
    RECONCILED = "reconciled"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (BatchState.RECONCILED, BatchState.FAILED)


class RunKind(StrEnum):
    INITIAL = "initial"  # at most one running at a time (a partial unique index)
    INTERVAL = "interval"
    REALTIME = "realtime"
    MANUAL = "manual"


class RunState(StrEnum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


FINISHED_STATES = (BatchState.RECONCILED.value, BatchState.FAILED.value)


# First key of a batch's session advisory lock (second: the batch id). A step holds it while it
# works on the batch (``pipeline.initial_sync.batch.batch_lock``), an upsert batch while its
# call is out (``pipeline.upserts.send_batch``); it goes away with a dead worker's connection,
# so "unfinished, past its due time and nobody holds its lock" means its worker died.
BATCH_LOCK_CLASS = 0x05D0


def _in_list(values: tuple[str, ...]) -> sql.Composable:
    return sql.SQL(", ").join(sql.Literal(v) for v in values)


def finished_states_sql() -> sql.Composable:
    """The finished batch states as an SQL list of literals, for ``state [NOT] IN (…)``."""
    return _in_list(FINISHED_STATES)


def ddl(settings: Settings) -> list[sql.Composable]:
    """The ledger's CREATE statements, each idempotent."""
    schema = settings.source.ledger_schema

    def t(name: str) -> sql.Identifier:
        return sql.Identifier(schema, name)

    states = _in_list(tuple(s.value for s in BatchState))
    kinds = _in_list(tuple(k.value for k in BatchKind))
    return [
        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)),
        sql.SQL(
            """CREATE TABLE IF NOT EXISTS {runs} (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                kind text NOT NULL,
                state text NOT NULL DEFAULT 'running',
                started_at timestamptz NOT NULL DEFAULT now(),
                updated_at timestamptz NOT NULL DEFAULT now(),
                finished_at timestamptz,
                error text,
                stats jsonb NOT NULL DEFAULT '{{}}'
            )"""
        ).format(runs=t("runs")),
        sql.SQL(
            """CREATE TABLE IF NOT EXISTS {batches} (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                run_id bigint REFERENCES {runs} (id) ON DELETE SET NULL,
                kind text NOT NULL CHECK (kind IN ({kinds})),
                state text NOT NULL CHECK (state IN ({states})),
                row_count integer NOT NULL DEFAULT 0,
                key_lo text,
                key_hi text,
                keys text[] NOT NULL DEFAULT '{{}}',
                versions bigint[] NOT NULL DEFAULT '{{}}',
                zip_path text,
                zip_bytes bigint,
                checksum text,
                file_id text,
                job_id text,
                attempts integer NOT NULL DEFAULT 0,
                error text,
                stats jsonb NOT NULL DEFAULT '{{}}',
                created_at timestamptz NOT NULL DEFAULT now(),
                updated_at timestamptz NOT NULL DEFAULT now(),
                finished_at timestamptz
            )"""
        ).format(batches=t("batches"), runs=t("runs"), kinds=kinds, states=states),
        sql.SQL(
            "CREATE INDEX IF NOT EXISTS batches_unfinished ON {} (updated_at)"
            " WHERE state NOT IN ({})"
        ).format(t("batches"), _in_list(FINISHED_STATES)),
        # 25,000-element arrays: stored out of line without compression (cheaper to write).
        sql.SQL(
            "ALTER TABLE {} ALTER COLUMN keys SET STORAGE EXTERNAL,"
            " ALTER COLUMN versions SET STORAGE EXTERNAL"
        ).format(t("batches")),
        sql.SQL(
            """CREATE OR REPLACE VIEW {batch_rows} AS
               SELECT b.id AS batch_id, c.row_key, c.version, b.finished_at AS released_at
               FROM {batches} b, unnest(b.keys, b.versions) AS c(row_key, version)"""
        ).format(batch_rows=t("batch_rows"), batches=t("batches")),
        sql.SQL("CREATE TABLE IF NOT EXISTS {} (locked boolean)").format(t("claim_lock")),
        # Added with the initial sync's state machine (pipeline/initial_sync.py): the job
        # creation intent, the callback token's digest, a job id a callback named, counts.
        sql.SQL(
            "ALTER TABLE {} ADD COLUMN IF NOT EXISTS job_requested_at timestamptz,"
            " ADD COLUMN IF NOT EXISTS callback_digest text,"
            " ADD COLUMN IF NOT EXISTS job_hint text,"
            " ADD COLUMN IF NOT EXISTS job_requests integer NOT NULL DEFAULT 0"
        ).format(t("batches")),
        sql.SQL(
            "ALTER TABLE {} DROP CONSTRAINT IF EXISTS batches_state_check,"
            " ADD CONSTRAINT batches_state_check CHECK (state IN ({}))"
        ).format(t("batches"), states),
        sql.SQL(
            "CREATE UNIQUE INDEX IF NOT EXISTS batches_callback_digest ON {} (callback_digest)"
            " WHERE callback_digest IS NOT NULL"
        ).format(t("batches")),
        sql.SQL("CREATE INDEX IF NOT EXISTS batches_run ON {} (run_id)").format(t("batches")),
        # When the batch's next step is due (a countdown): not stuck before (``stuck_sql``).
        sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS due_at timestamptz").format(t("batches")),
        sql.SQL(
            "CREATE UNIQUE INDEX IF NOT EXISTS runs_one_initial ON {} (kind)"
            " WHERE state = 'running' AND kind = 'initial'"
        ).format(t("runs")),
        sql.SQL(
            """CREATE TABLE IF NOT EXISTS {row_errors} (
                row_key text PRIMARY KEY,
                version bigint NOT NULL,
                batch_id bigint,
                code text NOT NULL,
                field text,
                message text,
                attempts integer NOT NULL DEFAULT 1,
                quarantined boolean NOT NULL DEFAULT false,
                first_seen timestamptz NOT NULL DEFAULT now(),
                last_seen timestamptz NOT NULL DEFAULT now()
            )"""
        ).format(row_errors=t("row_errors")),
        # Deletes (opt-in, ``sync.deletes``): the delete trigger writes one tombstone per
        # deleted legacy row; ``pipeline.deletes`` deletes its Zoho record, then the tombstone.
        sql.SQL(
            """CREATE TABLE IF NOT EXISTS {tombstones} (
                row_key text PRIMARY KEY,
                zoho_id text,
                deleted_at timestamptz NOT NULL DEFAULT now(),
                attempts integer NOT NULL DEFAULT 0,
                last_error text
            )"""
        ).format(tombstones=t("tombstones")),
    ]


def ensure_tables(conn: Connection, settings: Settings) -> None:
    """Create the ledger schema and tables if missing (in the caller's transaction)."""
    with conn.cursor() as cur:
        for statement in ddl(settings):
            cur.execute(statement)


@dataclass(frozen=True)
class Batch:
    """A batch as the ledger holds it."""

    id: int
    run_id: int | None
    kind: BatchKind
    state: BatchState
    row_count: int
    key_lo: str | None
    key_hi: str | None
    zip_path: str | None
    zip_bytes: int | None
    checksum: str | None
    file_id: str | None
    job_id: str | None
    attempts: int
    error: str | None
    stats: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    job_requested_at: datetime | None = None
    callback_digest: str | None = None
    job_hint: str | None = None
    job_requests: int = 0


_BATCH_COLUMNS = [
    *("id", "run_id", "kind", "state", "row_count", "key_lo", "key_hi", "zip_path"),
    *("zip_bytes", "checksum", "file_id", "job_id", "attempts", "error", "stats"),
    *("created_at", "updated_at", "finished_at"),
    *("job_requested_at", "callback_digest", "job_hint", "job_requests"),
]
# Columns a state transition may set along with the state.
_SETTABLE = frozenset(
    ("row_count", "zip_path", "zip_bytes", "checksum", "file_id", "job_id", "attempts", "error")
    + ("stats", "job_requested_at", "callback_digest", "job_hint", "job_requests")
)


def _t(settings: Settings, name: str) -> sql.Identifier:
    return sql.Identifier(settings.source.ledger_schema, name)


def create_run(
    conn: Connection, settings: Settings, kind: RunKind, stats: dict[str, Any] | None = None
) -> int:
    """Start a run (with its first ``stats``); returns its id (in the caller's transaction).

    A second running initial run is refused by the partial unique index
    (``psycopg2.errors.UniqueViolation``).
    """
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("INSERT INTO {} (kind, stats) VALUES (%s, %s) RETURNING id").format(
                _t(settings, "runs")
            ),
            (kind.value, Json(stats or {})),
        )
        return int(cur.fetchone()[0])  # type: ignore[index]


def touch_run(conn: Connection, settings: Settings, run_id: int) -> None:
    """Note that a run moved (``updated_at``: the sweeper leaves it alone)."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("UPDATE {} SET updated_at = now() WHERE id = %s").format(_t(settings, "runs")),
            (run_id,),
        )


def merge_run_stats(
    conn: Connection, settings: Settings, run_id: int, stats: dict[str, Any]
) -> None:
    """Merge ``stats`` into the run's ``stats`` (in the caller's transaction)."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("UPDATE {} SET stats = stats || %s, updated_at = now() WHERE id = %s").format(
                _t(settings, "runs")
            ),
            (Json(stats), run_id),
        )


def set_batch(conn: Connection, settings: Settings, batch_id: int, **fields: Any) -> None:
    """Set columns of a batch (names from the settable ones) without changing its state, and
    touch ``updated_at``; in the caller's transaction."""
    unknown = set(fields) - _SETTABLE
    if unknown:
        raise ValueError(f"not settable on a batch: {sorted(unknown)}")
    sets = [sql.SQL("updated_at = now()")]
    params: list[Any] = []
    for name, value in fields.items():
        sets.append(sql.SQL("{} = %s").format(sql.Identifier(name)))
        params.append(Json(value) if name == "stats" else value)
    params.append(batch_id)
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("UPDATE {} SET {} WHERE id = %s").format(
                _t(settings, "batches"), sql.SQL(", ").join(sets)
            ),
            params,
        )


def record_job_intent(
    conn: Connection, settings: Settings, batch_id: int, digest: str | None, stats: dict[str, Any]
) -> None:
    """Record that create-job is about to be sent for an ``uploaded`` batch (commit before
    sending): when, the callback token's digest, one more request; any earlier hint cleared."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "UPDATE {} SET job_requested_at = now(), callback_digest = %s,"
                " job_hint = NULL, job_requests = job_requests + 1, stats = %s,"
                " updated_at = now() WHERE id = %s AND state = %s"
            ).format(_t(settings, "batches")),
            (digest, Json(stats), batch_id, BatchState.UPLOADED.value),
        )


def batch_by_callback_digest(cur: Any, ledger_schema: str, digest: str) -> int | None:
    """The unfinished batch whose callback token has this sha256 digest, or None."""
    cur.execute(
        sql.SQL("SELECT id FROM {} WHERE callback_digest = %s AND state NOT IN ({})").format(
            sql.Identifier(ledger_schema, "batches"), finished_states_sql()
        ),
        (digest,),
    )
    row = cur.fetchone()
    return None if row is None else int(row[0])


def record_job_hint(cur: Any, settings: Settings, batch_id: int, job_id: str) -> bool:
    """Keep the job id a callback named, only for a batch that sent create-job without
    learning the id; True if stored."""
    cur.execute(
        sql.SQL(
            "UPDATE {} SET job_hint = %s WHERE id = %s AND state = %s"
            " AND job_id IS NULL AND job_requested_at IS NOT NULL"
        ).format(_t(settings, "batches")),
        (job_id[:100], batch_id, BatchState.UPLOADED.value),
    )
    return bool(cur.rowcount == 1)


def finish_run(
    conn: Connection, settings: Settings, run_id: int, state: RunState, error: str | None = None
) -> None:
    """Record a run's end."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "UPDATE {} SET state = %s, error = %s, finished_at = now(), updated_at = now()"
                " WHERE id = %s"
            ).format(sql.Identifier(settings.source.ledger_schema, "runs")),
            (state.value, error, run_id),
        )


def get_batch(conn: Connection, settings: Settings, batch_id: int) -> Batch | None:
    """The batch ``batch_id``, or None."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT {} FROM {} WHERE id = %s").format(
                sql.SQL(", ").join(sql.Identifier(c) for c in _BATCH_COLUMNS),
                sql.Identifier(settings.source.ledger_schema, "batches"),
            ),
            (batch_id,),
        )
        row = cur.fetchone()
    if row is None:
        return None
    values = dict(zip(_BATCH_COLUMNS, row, strict=True))
    values["kind"] = BatchKind(values["kind"])
    values["state"] = BatchState(values["state"])
    return Batch(**values)


def transition(
    conn: Connection,
    settings: Settings,
    batch_id: int,
    new_state: BatchState,
    *,
    expected: BatchState | tuple[BatchState, ...] | None = None,
    **fields: Any,
) -> bool:
    """Move a batch to ``new_state`` (and set ``fields``), only if it is in ``expected``.

    Returns False when the batch was not in an expected state (someone else moved it): the
    compare-and-set that makes a repeated step harmless. A finished state releases the
    batch's claims (they only hold while the batch is unfinished).
    """
    unknown = set(fields) - _SETTABLE
    if unknown:
        raise ValueError(f"cannot set {sorted(unknown)} on a batch")
    sets = [sql.SQL("state = %s"), sql.SQL("updated_at = now()")]
    params: list[Any] = [new_state.value]
    for name, value in fields.items():
        sets.append(sql.SQL("{} = %s").format(sql.Identifier(name)))
        params.append(Json(value) if name == "stats" else value)
    if new_state.finished:
        sets.append(sql.SQL("finished_at = now()"))
    where = sql.SQL("id = %s")
    params.append(batch_id)
    if expected is not None:
        states = (expected,) if isinstance(expected, BatchState) else expected
        where = sql.SQL("id = %s AND state = ANY(%s)")
        params.append([s.value for s in states])
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("UPDATE {} SET {} WHERE {}").format(
                sql.Identifier(settings.source.ledger_schema, "batches"),
                sql.SQL(", ").join(sets),
                where,
            ),
            params,
        )
        return cur.rowcount == 1


def finish_batch(
    conn: Connection,
    settings: Settings,
    batch_id: int,
    state: BatchState = BatchState.RECONCILED,
    error: str | None = None,
) -> bool:
    """End a batch (reconciled or failed) and release its claims, in the caller's transaction."""
    if not state.finished:
        raise ValueError(f"{state} is not a finished state")
    unfinished = tuple(s for s in BatchState if not s.finished)
    fields: dict[str, Any] = {} if error is None else {"error": error}
    return transition(conn, settings, batch_id, state, expected=unfinished, **fields)


def unfinished_batches(conn: Connection, settings: Settings) -> list[Batch]:
    """Batches not yet reconciled or failed, oldest first (what a sweeper or a new run resumes)."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT id FROM {} WHERE state NOT IN ({}) ORDER BY id").format(
                sql.Identifier(settings.source.ledger_schema, "batches"),
                _in_list(FINISHED_STATES),
            )
        )
        ids = [r[0] for r in cur.fetchall()]
    batches = [get_batch(conn, settings, i) for i in ids]
    return [b for b in batches if b is not None]


def unlocked_sql(batch_id: sql.Composable) -> sql.Composable:
    """True when no session holds the batch's advisory lock (no live worker is on it)."""
    return sql.SQL(
        "NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted"
        " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND l.classid = {cls} AND l.objid = ({id})::oid AND l.objsubid = 2)"
    ).format(cls=sql.Literal(BATCH_LOCK_CLASS), id=batch_id)


def stuck_sql(older_than: float) -> sql.Composable:
    """The one definition of a stuck batch, as a predicate on ``batches``: unfinished, not moved
    (``updated_at``) and not due (``due_at``, a step's countdown) for ``older_than`` seconds,
    and no live worker holding its lock. The sweeper restarts the stuck bulk batches (and the
    realtime ones are released); ``/metrics`` counts every stuck batch
    (``ordersync_batch_stuck``). A step at work holds the lock however long it takes, so the
    grace can be seconds, not minutes."""
    return sql.SQL(
        "(state NOT IN ({}) AND greatest(updated_at, due_at) < now() - make_interval(secs => {})"
        " AND {})"
    ).format(
        finished_states_sql(), sql.Literal(float(older_than)),
        unlocked_sql(sql.SQL("batches.id")),
    )


def expect_step(conn: Connection, settings: Settings, batch_id: int, countdown: float) -> None:
    """Record that the batch's next step is due in ``countdown`` seconds (a poll's back-off, a
    callback wait): until then the batch is not stuck, even with no worker on it."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "UPDATE {} SET due_at = now() + make_interval(secs => %s) WHERE id = %s"
                " AND state NOT IN ({})"
            ).format(_t(settings, "batches"), finished_states_sql()),
            (float(countdown), batch_id),
        )


def record_zip(
    cur: Any, settings: Settings, batch_id: int, *, path: str, size: int, checksum: str
) -> None:
    """Record a batch's rendered zip (path, size, sha256), in the caller's transaction."""
    cur.execute(
        sql.SQL(
            "UPDATE {} SET zip_path = %s, zip_bytes = %s, checksum = %s, updated_at = now()"
            " WHERE id = %s"
        ).format(sql.Identifier(settings.source.ledger_schema, "batches")),
        (path, size, checksum, batch_id),
    )


def batch_claims(conn: Connection, settings: Settings, batch_id: int) -> list[tuple[str, int]]:
    """The ``(row_key, version)`` pairs a batch claimed, in claim (scan) order."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT keys, versions FROM {} WHERE id = %s").format(
                sql.Identifier(settings.source.ledger_schema, "batches")
            ),
            (batch_id,),
        )
        row = cur.fetchone()
    if row is None:
        raise LookupError(f"no batch {batch_id}")
    return list(zip(row[0], (int(v) for v in row[1]), strict=True))


@dataclass(frozen=True)
class RowError:
    """Zoho's verdict on one row: ``code`` (e.g. INVALID_DATA), the field it names, message."""

    row_key: str
    code: str
    field: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class ErrorResult:
    recorded: int
    quarantined: int  # rows now held back (attempts reached what their code allows)


def record_row_errors(
    conn: Connection, settings: Settings, batch_id: int, errors: Iterable[RowError]
) -> ErrorResult:
    """Record refusals of rows of a batch, counting attempts per row version.

    The attempt count grows by one per batch that failed the same version of a row (recording
    the same batch twice counts once) and restarts at 1 for a new version. A row is held back
    (``quarantined``: extraction skips it until its version moves past the recorded one) once
    its attempts reach what its code allows (``pipeline.zoho.codes.attempts_allowed``): at once
    for a permanent code such as ``INVALID_DATA``, after ``max_attempts`` for an unknown one,
    after three times as many for a transient one. Runs in the caller's transaction.
    """
    rows = list(errors)
    if not rows:
        return ErrorResult(0, 0)
    statement = sql.SQL(
        """WITH u AS (SELECT * FROM unnest(%(keys)s::text[], %(codes)s::text[],
                                            %(fields)s::text[], %(messages)s::text[],
                                            %(allowed)s::int[])
                           AS u(row_key, code, field, message, allowed)),
                c AS (SELECT DISTINCT ON (u.row_key) u.*, br.version,
                             CASE WHEN e.row_key IS NULL OR e.version <> br.version THEN 1
                                  WHEN e.batch_id IS NOT DISTINCT FROM %(batch)s THEN e.attempts
                                  ELSE e.attempts + 1 END AS attempts
                      FROM u
                      JOIN (SELECT x.row_key, x.version FROM {batches} b,
                                   unnest(b.keys, b.versions) AS x(row_key, version)
                            WHERE b.id = %(batch)s) AS br ON br.row_key = u.row_key
                      LEFT JOIN {row_errors} e ON e.row_key = u.row_key
                      ORDER BY u.row_key)
           INSERT INTO {row_errors} AS e (row_key, version, batch_id, code, field, message,
                                          attempts, quarantined)
           SELECT row_key, version, %(batch)s, code, field, message, attempts,
                  attempts >= allowed FROM c
           ON CONFLICT (row_key) DO UPDATE SET
               attempts = EXCLUDED.attempts,
               quarantined = EXCLUDED.quarantined,
               version = EXCLUDED.version, batch_id = EXCLUDED.batch_id,
               code = EXCLUDED.code, field = EXCLUDED.field, message = EXCLUDED.message,
               last_seen = now()
           RETURNING quarantined"""
    ).format(batches=_t(settings, "batches"), row_errors=_t(settings, "row_errors"))
    for r in rows:
        if codes.classify(r.code) is codes.RowCodeClass.UNKNOWN:
            log.warning(
                "row %s: Zoho code %r is not in pipeline.zoho.codes; counted as unknown"
                " (held after %s attempts)",
                r.row_key,
                r.code,
                settings.max_attempts,
            )
    with conn.cursor() as cur:
        cur.execute(
            statement,
            {
                "keys": text_array([str(r.row_key) for r in rows]),
                "codes": text_array([r.code for r in rows]),
                "fields": text_array([r.field for r in rows]),
                "messages": text_array([r.message for r in rows]),
                "allowed": int_array(
                    codes.attempts_allowed(r.code, settings.max_attempts) for r in rows
                ),
                "batch": batch_id,
            },
        )
        flags = [bool(r[0]) for r in cur.fetchall()]
    return ErrorResult(len(flags), sum(flags))


def hold_back_sql(settings: Settings, rows: sql.Composable) -> sql.Composable:
    """Hold rows back at once: ``rows`` selects ``(row_key, version, batch_id, code, field,
    message)``; each becomes (or replaces) its row error, attempts 1, quarantined.

    Used for the rows a claim passes over because they break a field rule
    (``pipeline.legacy.extract.hold_invalid``): the select reads the legacy table, the write
    is the ledger's, one statement (no round trip per row).
    """
    return sql.SQL(
        """INSERT INTO {e} AS e (row_key, version, batch_id, code, field, message,
                                 attempts, quarantined)
           SELECT s.row_key, s.version, s.batch_id::bigint, s.code, s.field, s.message, 1, true
           FROM ({rows}) AS s(row_key, version, batch_id, code, field, message)
           ON CONFLICT (row_key) DO UPDATE SET
               version = EXCLUDED.version, batch_id = EXCLUDED.batch_id, code = EXCLUDED.code,
               field = EXCLUDED.field, message = EXCLUDED.message, attempts = 1,
               quarantined = true, last_seen = now()"""
    ).format(e=_t(settings, "row_errors"), rows=rows)
