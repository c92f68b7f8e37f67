"""The ledger: durable state of every run and batch, in the ``ordersync`` schema of the legacy DB.

Tables (created by :func:`ensure_tables`, called from ``ordersync db install``):

``runs``
    One sync run (``kind``: interval, realtime, manual) with its state and a free ``stats`` jsonb.
``batches``
    One unit of work sent to Zoho: a bulk job of up to 25,000 rows or a near-real-time upsert
    of up to 100. A bulk batch moves ``claimed → extracted → uploaded → job_created → job_done
    → reconciled``; any step may end in ``failed`` (``error`` says why). A realtime batch goes
    ``claimed → extracted → reconciled`` (or ``failed``). Each step records its result here
    (``zip_path``/``checksum``/``row_count`` after extraction, ``file_id`` after upload,
    ``job_id`` when the job is created, …) so a repeated step can see it is done and a sweeper
    can find batches that stopped moving (``updated_at``).
``batch_rows``
    The claim: ``(batch_id, row_key, version)`` for every row a batch carries, ``row_key`` being
    the legacy key as text. A row is claimed while its claim has no ``released_at``; a unique
    index on ``row_key`` among open claims makes two claims of the same row impossible.
    Finishing a batch (:func:`finish_batch`) releases its claims.
``row_errors``
    The latest Zoho error of each row (code, field, message), the row version it was about, an
    attempt count for that version, and ``quarantined`` once attempts reach ``max_attempts``.
    A quarantined row is held back only while its version is unchanged: editing the row bumps
    the version and lifts the quarantine by itself. Marking a row synced deletes its error.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from psycopg2 import sql
from psycopg2.extensions import connection as Connection
from psycopg2.extras import Json

from pipeline.settings import Settings


class BatchKind(StrEnum):
    """How a batch goes to Zoho."""

    BULK = "bulk"
    REALTIME = "realtime"


class BatchState(StrEnum):
    """Where a batch stands; see the module docstring for the transitions."""

    CLAIMED = "claimed"
    EXTRACTED = "extracted"
    UPLOADED = "uploaded"
    JOB_CREATED = "job_created"
    JOB_DONE = "job_done"
    RECONCILED = "reconciled"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (BatchState.RECONCILED, BatchState.FAILED)


class RunKind(StrEnum):
    INTERVAL = "interval"
    REALTIME = "realtime"
    MANUAL = "manual"


class RunState(StrEnum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


FINISHED_STATES = (BatchState.RECONCILED.value, BatchState.FAILED.value)


def _in_list(values: tuple[str, ...]) -> sql.Composable:
    return sql.SQL(", ").join(sql.Literal(v) for v in values)


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
        sql.SQL(
            """CREATE TABLE IF NOT EXISTS {batch_rows} (
                batch_id bigint NOT NULL,
                row_key text NOT NULL,
                version bigint NOT NULL,
                released_at timestamptz
            )"""
        ).format(batch_rows=t("batch_rows")),
        sql.SQL("CREATE INDEX IF NOT EXISTS batch_rows_batch ON {} (batch_id)").format(
            t("batch_rows")
        ),
        sql.SQL(
            "CREATE UNIQUE INDEX IF NOT EXISTS batch_rows_open_claim ON {} (row_key)"
            " WHERE released_at IS NULL"
        ).format(t("batch_rows")),
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


_BATCH_COLUMNS = (
    "id run_id kind state row_count zip_path zip_bytes checksum file_id job_id attempts error"
    " stats created_at updated_at finished_at"
).split()
# Columns a state transition may set along with the state.
_SETTABLE = frozenset(
    "row_count zip_path zip_bytes checksum file_id job_id attempts error stats".split()
)


def create_run(conn: Connection, settings: Settings, kind: RunKind) -> int:
    """Start a run; returns its id (in the caller's transaction)."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("INSERT INTO {} (kind) VALUES (%s) RETURNING id").format(
                sql.Identifier(settings.source.ledger_schema, "runs")
            ),
            (kind.value,),
        )
        return int(cur.fetchone()[0])  # type: ignore[index]


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
    compare-and-set that makes a repeated step harmless. A finished state also releases the
    batch's claims (see :func:`finish_batch`).
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
        moved = cur.rowcount == 1
    if moved and new_state.finished:
        release_claims(conn, settings, batch_id)
    return moved


def release_claims(conn: Connection, settings: Settings, batch_id: int) -> int:
    """Release every open claim of a batch; its rows may be extracted again. Returns the count."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "UPDATE {} SET released_at = now() WHERE batch_id = %s AND released_at IS NULL"
            ).format(sql.Identifier(settings.source.ledger_schema, "batch_rows")),
            (batch_id,),
        )
        return cur.rowcount


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
