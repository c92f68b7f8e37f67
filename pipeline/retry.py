"""``ordersync retry``: put rows that Zoho refused back in play, after the cause was fixed.

A retried row keeps its error record (code, field, message: still useful until it syncs) but
its attempt count restarts at 0 and, when asked, its quarantine is lifted, so extraction takes it
again with the full number of attempts. A row that is somehow marked synced while it has an
error is made pending again. Versions are never bumped: the row's data did not change, and a
version bump would only invalidate claims in flight.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg2 import sql
from psycopg2.extensions import connection as Connection

from pipeline.legacy.names import Names, key_type
from pipeline.settings import Settings


@dataclass(frozen=True)
class RetryResult:
    """``retried``: error records reset; ``unquarantined``: of them, held back until now;
    ``made_pending``: rows whose ``synced`` flag had to be cleared."""

    retried: int
    unquarantined: int
    made_pending: int


def retry_row_errors(
    conn: Connection,
    settings: Settings,
    *,
    code: str | None = None,
    include_quarantined: bool = False,
) -> RetryResult:
    """Reset the attempts of errored rows (of ``code`` if given) so they are sent again.

    Without ``include_quarantined`` only rows not held back are touched (their attempt count
    restarts, which postpones their quarantine); with it, held-back rows are released too.
    Runs in the caller's transaction; one statement.
    """
    n = Names(settings)
    held = sql.SQL("(e.quarantined AND e.version IS NOT DISTINCT FROM t.{})").format(n.version)
    conditions: list[sql.Composable] = [sql.SQL("true")]
    params: dict[str, object] = {}
    if code is not None:
        conditions.append(sql.SQL("e.code = %(code)s"))
        params["code"] = code
    if not include_quarantined:
        conditions.append(sql.SQL("NOT {}").format(held))
    statement = sql.SQL(
        """WITH chosen AS (
               SELECT e.row_key, {held} AS was_held
               FROM {e} e LEFT JOIN {t} t ON t.{k} = e.row_key::{kt}
               WHERE {where}
               FOR UPDATE OF e),
           reset AS (
               UPDATE {e} e SET attempts = 0, quarantined = false
               FROM chosen c WHERE e.row_key = c.row_key
               RETURNING e.row_key),
           pending AS (
               UPDATE {t} t SET {s} = false
               FROM chosen c WHERE t.{k} = c.row_key::{kt} AND t.{s}
               RETURNING t.{k})
           SELECT (SELECT count(*) FROM reset),
                  (SELECT count(*) FROM chosen WHERE was_held),
                  (SELECT count(*) FROM pending)"""
    ).format(
        held=held,
        e=n.ledger_table("row_errors"),
        t=n.table,
        k=n.key,
        kt=key_type(conn, settings),
        s=n.synced,
        where=sql.SQL(" AND ").join(conditions),
    )
    with conn.cursor() as cur:
        cur.execute(statement, params)
        retried, unquarantined, made_pending = cur.fetchone()  # type: ignore[misc]
    return RetryResult(int(retried), int(unquarantined), int(made_pending))
